// Tests of the seccomp deny-list: the BPF program interpreted in TypeScript, then loaded by real bwrap.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  AUDIT_ARCH_X86_64,
  buildSeccompProgram,
  CLONE_NAMESPACE_FLAGS,
  deniedSyscalls,
  ENOSYS,
  EPERM,
  NR_CLONE,
  NR_PERSONALITY,
  PERSONALITY_DANGEROUS_FLAGS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  type SockFilter,
  seccompInstructions,
  X32_SYSCALL_BIT,
} from './seccomp-filter.ts';

const AUDIT_ARCH_I386 = 0x40000003;

/** A classic-BPF interpreter for exactly the instructions the filter uses, over struct seccomp_data. */
function evaluate(prog: readonly SockFilter[], data: { nr: number; arch: number; arg0: number }): number {
  const word = (off: number): number => {
    if (off === 0) return data.nr >>> 0;
    if (off === 4) return data.arch >>> 0;
    if (off === 16) return data.arg0 >>> 0;
    throw new Error(`unexpected load offset ${off}`);
  };
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps < 10_000; steps++) {
    const ins = prog[pc];
    if (ins === undefined) throw new Error(`pc ${pc} ran off the program`);
    switch (ins.code) {
      case 0x20:
        a = word(ins.k);
        pc++;
        break;
      case 0x15:
        pc += 1 + (a === ins.k ? ins.jt : ins.jf);
        break;
      case 0x35:
        pc += 1 + (a >= ins.k ? ins.jt : ins.jf);
        break;
      case 0x45:
        pc += 1 + ((a & ins.k) !== 0 ? ins.jt : ins.jf);
        break;
      case 0x06:
        return ins.k >>> 0;
      default:
        throw new Error(`unknown opcode ${ins.code}`);
    }
  }
  throw new Error('program did not return');
}

const prog = seccompInstructions();
const errno = (e: number) => (SECCOMP_RET_ERRNO | e) >>> 0;
const special = new Set([NR_CLONE, NR_PERSONALITY, ...deniedSyscalls.map((s) => s.nr)]);

test('every jump lands inside the program and the program is small enough for the kernel', () => {
  assert.ok(prog.length < 4096);
  prog.forEach((ins, i) => {
    if (ins.code === 0x06 || ins.code === 0x20) return; // returns and loads do not jump
    assert.ok(i + 1 + ins.jt < prog.length, `jt of ${i}`);
    assert.ok(i + 1 + ins.jf < prog.length, `jf of ${i}`);
  });
  assert.equal(prog.at(-1)?.code, 0x06);
  const bytes = buildSeccompProgram();
  assert.equal(bytes.length, prog.length * 8);
  // First instruction: ld [4] (arch): code 0x20 LE, jt 0, jf 0, k 4 LE.
  assert.deepEqual([...bytes.subarray(0, 8)], [0x20, 0, 0, 0, 4, 0, 0, 0]);
});

test('each denied syscall gets its errno; unlisted ones are allowed', () => {
  for (const s of deniedSyscalls) {
    assert.equal(evaluate(prog, { nr: s.nr, arch: AUDIT_ARCH_X86_64, arg0: 0 }), errno(s.errno), s.name);
  }
  assert.equal(evaluate(prog, { nr: 435, arch: AUDIT_ARCH_X86_64, arg0: 0 }), errno(ENOSYS), 'clone3');
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: X32_SYSCALL_BIT - 1 }).filter((nr) => !special.has(nr)),
      fc.integer({ min: 0, max: 0xffffffff }),
      (nr, arg0) => evaluate(prog, { nr, arch: AUDIT_ARCH_X86_64, arg0 }) === SECCOMP_RET_ALLOW,
    ),
  );
});

test('x32 syscall numbers are refused and a foreign architecture is killed', () => {
  fc.assert(
    fc.property(fc.integer({ min: X32_SYSCALL_BIT, max: 0xffffffff }), (nr) => {
      return evaluate(prog, { nr, arch: AUDIT_ARCH_X86_64, arg0: 0 }) === errno(EPERM);
    }),
  );
  // i386 numbers differ (unshare is 310 there): an x86_64 deny-list must not judge them.
  assert.equal(evaluate(prog, { nr: 310, arch: AUDIT_ARCH_I386, arg0: 0 }), SECCOMP_RET_KILL_PROCESS);
});

test('clone is refused exactly when it asks for a namespace', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (flags) => {
      const want = (flags & CLONE_NAMESPACE_FLAGS) !== 0 ? errno(EPERM) : SECCOMP_RET_ALLOW;
      return evaluate(prog, { nr: NR_CLONE, arch: AUDIT_ARCH_X86_64, arg0: flags }) === want;
    }),
  );
  // What glibc passes for fork() and pthread_create().
  assert.equal(
    evaluate(prog, { nr: NR_CLONE, arch: AUDIT_ARCH_X86_64, arg0: 0x01200011 }),
    SECCOMP_RET_ALLOW,
  );
  assert.equal(
    evaluate(prog, { nr: NR_CLONE, arch: AUDIT_ARCH_X86_64, arg0: 0x003d0f00 }),
    SECCOMP_RET_ALLOW,
  );
  assert.equal(
    evaluate(prog, { nr: NR_CLONE, arch: AUDIT_ARCH_X86_64, arg0: 0x10000000 | 17 }),
    errno(EPERM),
  );
});

test('personality refuses mitigation-weakening flags but answers queries', () => {
  const call = (arg0: number) => evaluate(prog, { nr: NR_PERSONALITY, arch: AUDIT_ARCH_X86_64, arg0 });
  assert.equal(call(0xffffffff), SECCOMP_RET_ALLOW);
  assert.equal(call(0), SECCOMP_RET_ALLOW);
  assert.equal(call(0x0008), SECCOMP_RET_ALLOW); // PER_LINUX32
  assert.equal(call(0x0040000), errno(EPERM)); // ADDR_NO_RANDOMIZE
  assert.equal(call(0x0400000), errno(EPERM)); // READ_IMPLIES_EXEC
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xfffffffe }), (arg) => {
      return call(arg) === ((arg & PERSONALITY_DANGEROUS_FLAGS) !== 0 ? errno(EPERM) : SECCOMP_RET_ALLOW);
    }),
  );
});

/** Runs `sh -c script` in a minimal bwrap sandbox, with or without the filter. */
function sandboxed(script: string, withFilter: boolean): Promise<{ code: number | null; out: string }> {
  const root = process.getuid?.() === 0;
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--uid',
    '65534',
    '--gid',
    '65534',
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/bin',
    '/bin',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--clearenv',
    '--setenv',
    'PATH',
    '/usr/bin',
    ...(withFilter ? ['--seccomp', '3'] : []),
    '--',
    'sh',
    '-c',
    script,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/bwrap', args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: {},
      ...(root ? { uid: 65534, gid: 65534 } : {}),
    });
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const fd3 = child.stdio[3] as NodeJS.WritableStream;
    fd3.end(withFilter ? buildSeccompProgram() : Buffer.alloc(0));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('in a real sandbox the filter blocks `unshare -U` with EPERM and ordinary programs still run', async () => {
  const script =
    'grep "^Seccomp:" /proc/self/status; unshare -U true && echo UNSHARE_OK; python3 -c "print(6*7)"; echo done';
  const filtered = await sandboxed(script, true);
  assert.match(filtered.out, /Seccomp:\s+2/);
  assert.match(filtered.out, /unshare failed: Operation not permitted/);
  assert.doesNotMatch(filtered.out, /UNSHARE_OK/);
  assert.match(filtered.out, /^42$/m);
  assert.match(filtered.out, /^done$/m);
  // The control: the same sandbox without the filter lets the nested user namespace through.
  const bare = await sandboxed(script, false);
  assert.match(bare.out, /UNSHARE_OK/);
});
