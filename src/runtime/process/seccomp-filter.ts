// The sandbox's seccomp deny-list, generated as a classic-BPF program for bubblewrap's `--seccomp FD`.
//
// Policy: allow by default, refuse a short list of syscalls that a service never needs and that either
// change host-global state or expose large, often-exploited kernel surface. The workload already runs
// with no capabilities in its own user namespace, so most of these would fail anyway: the filter is the
// second wall, for the day a kernel bug makes the first one thin. Only x86_64 is supported.

import { SandboxUnavailableError } from '../driver.ts';

/** `AUDIT_ARCH_X86_64` from <linux/audit.h>: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** x32 ABI syscalls carry this bit in `nr` while reporting AUDIT_ARCH_X86_64. */
export const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;

export const EPERM = 1;
export const ENOSYS = 38;

/** Offsets into `struct seccomp_data` (little-endian x86_64): nr u32, arch u32, ip u64, args u64[6]. */
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
/** Low 32 bits of args[0]. */
export const SECCOMP_DATA_ARG0_LO = 16;

// Classic BPF opcodes used here.
const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06; // BPF_RET | BPF_K

export interface SockFilter {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export interface DeniedSyscall {
  name: string;
  /** x86_64 syscall number. */
  nr: number;
  errno: number;
  why: string;
}

const modules = 'loads or removes kernel code';
const mounts = 'reshapes the filesystem view the sandbox was built with';
const namespaces = 'new namespaces (user namespaces above all) open kernel surface behind many escalations';
const tracing = 'reads or writes another process memory';
const surface = 'large kernel attack surface, repeatedly exploited; no service needs it';
const keyring = 'the kernel keyring is not namespaced';
const hostAdmin = 'changes host-wide state';
const clock = 'the clock is host-wide';

/** Syscalls answered with an errno instead of running. Numbers from asm/unistd_64.h. */
export const deniedSyscalls: readonly DeniedSyscall[] = [
  { name: 'init_module', nr: 175, errno: EPERM, why: modules },
  { name: 'finit_module', nr: 313, errno: EPERM, why: modules },
  { name: 'delete_module', nr: 176, errno: EPERM, why: modules },
  { name: 'kexec_load', nr: 246, errno: EPERM, why: 'replaces the running kernel' },
  { name: 'kexec_file_load', nr: 320, errno: EPERM, why: 'replaces the running kernel' },
  { name: 'reboot', nr: 169, errno: EPERM, why: hostAdmin },
  { name: 'mount', nr: 165, errno: EPERM, why: mounts },
  { name: 'umount2', nr: 166, errno: EPERM, why: mounts },
  { name: 'pivot_root', nr: 155, errno: EPERM, why: mounts },
  { name: 'chroot', nr: 161, errno: EPERM, why: mounts },
  { name: 'open_tree', nr: 428, errno: EPERM, why: mounts },
  { name: 'move_mount', nr: 429, errno: EPERM, why: mounts },
  { name: 'fsopen', nr: 430, errno: EPERM, why: mounts },
  { name: 'fsconfig', nr: 431, errno: EPERM, why: mounts },
  { name: 'fsmount', nr: 432, errno: EPERM, why: mounts },
  { name: 'fspick', nr: 433, errno: EPERM, why: mounts },
  { name: 'mount_setattr', nr: 442, errno: EPERM, why: mounts },
  { name: 'unshare', nr: 272, errno: EPERM, why: namespaces },
  { name: 'setns', nr: 308, errno: EPERM, why: namespaces },
  // clone3 passes its flags in memory that BPF cannot read; ENOSYS makes libc fall back to clone(2),
  // whose flags are checked below.
  { name: 'clone3', nr: 435, errno: ENOSYS, why: 'flags are out of reach of BPF; libc falls back to clone' },
  { name: 'ptrace', nr: 101, errno: EPERM, why: tracing },
  { name: 'process_vm_readv', nr: 310, errno: EPERM, why: tracing },
  { name: 'process_vm_writev', nr: 311, errno: EPERM, why: tracing },
  { name: 'pidfd_getfd', nr: 438, errno: EPERM, why: 'steals file descriptors from another process' },
  { name: 'kcmp', nr: 312, errno: EPERM, why: 'probes kernel pointers of other processes' },
  { name: 'bpf', nr: 321, errno: EPERM, why: surface },
  { name: 'perf_event_open', nr: 298, errno: EPERM, why: surface },
  { name: 'userfaultfd', nr: 323, errno: EPERM, why: 'stretches kernel race windows for exploits' },
  { name: 'io_uring_setup', nr: 425, errno: EPERM, why: surface },
  { name: 'io_uring_enter', nr: 426, errno: EPERM, why: surface },
  { name: 'io_uring_register', nr: 427, errno: EPERM, why: surface },
  { name: 'keyctl', nr: 250, errno: EPERM, why: keyring },
  { name: 'add_key', nr: 248, errno: EPERM, why: keyring },
  { name: 'request_key', nr: 249, errno: EPERM, why: keyring },
  { name: 'swapon', nr: 167, errno: EPERM, why: hostAdmin },
  { name: 'swapoff', nr: 168, errno: EPERM, why: hostAdmin },
  { name: 'acct', nr: 163, errno: EPERM, why: hostAdmin },
  { name: 'quotactl', nr: 179, errno: EPERM, why: hostAdmin },
  { name: 'quotactl_fd', nr: 443, errno: EPERM, why: hostAdmin },
  { name: 'settimeofday', nr: 164, errno: EPERM, why: clock },
  { name: 'clock_settime', nr: 227, errno: EPERM, why: clock },
  { name: 'syslog', nr: 103, errno: EPERM, why: 'the kernel log leaks kernel addresses' },
  {
    name: 'open_by_handle_at',
    nr: 304,
    errno: EPERM,
    why: 'walks past mount boundaries (the "shocker" escape)',
  },
  { name: 'iopl', nr: 172, errno: EPERM, why: 'raw hardware I/O ports' },
  { name: 'ioperm', nr: 173, errno: EPERM, why: 'raw hardware I/O ports' },
  {
    name: 'lookup_dcookie',
    nr: 212,
    errno: EPERM,
    why: 'obsolete profiling interface that leaks kernel data',
  },
];

/** clone(2) flags that create namespaces; any of them in args[0] is refused (same reason as unshare). */
export const CLONE_NAMESPACE_FLAGS =
  0x00020000 | // CLONE_NEWNS
  0x02000000 | // CLONE_NEWCGROUP
  0x04000000 | // CLONE_NEWUTS
  0x08000000 | // CLONE_NEWIPC
  0x10000000 | // CLONE_NEWUSER
  0x20000000 | // CLONE_NEWPID
  0x40000000; // CLONE_NEWNET
export const NR_CLONE = 56;

/**
 * personality(2) flags that only weaken exploit mitigations: ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO,
 * READ_IMPLIES_EXEC. personality(0xffffffff) is a query and stays allowed.
 */
export const PERSONALITY_DANGEROUS_FLAGS = 0x0040000 | 0x0100000 | 0x0400000;
export const PERSONALITY_QUERY = 0xffffffff;
export const NR_PERSONALITY = 135;

function stmt(code: number, k: number): SockFilter {
  return { code, jt: 0, jf: 0, k: k >>> 0 };
}

function jump(code: number, k: number, jt: number, jf: number): SockFilter {
  return { code, jt, jf, k: k >>> 0 };
}

const errno = (e: number): number => (SECCOMP_RET_ERRNO | (e & 0xffff)) >>> 0;

/** The filter as instructions (exposed for tests that interpret it). */
export function seccompInstructions(): SockFilter[] {
  const prog: SockFilter[] = [
    // A process of another ABI (i386 via int 0x80) would see different syscall numbers: kill it.
    stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
    jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    // x32 numbers alias the 64-bit ones with a high bit: refuse them all.
    jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
    stmt(BPF_RET_K, errno(EPERM)),
  ];
  for (const s of deniedSyscalls) {
    prog.push(jump(BPF_JEQ_K, s.nr, 0, 1), stmt(BPF_RET_K, errno(s.errno)));
  }
  // clone: refuse namespace flags, allow the rest (threads, fork).
  prog.push(
    jump(BPF_JEQ_K, NR_CLONE, 0, 4),
    stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARG0_LO),
    jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
    stmt(BPF_RET_K, errno(EPERM)),
    stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
  );
  // personality: allow queries and harmless personas, refuse mitigation-weakening flags. The check
  // reads only the low 32 bits, where every persona flag lives.
  prog.push(
    jump(BPF_JEQ_K, NR_PERSONALITY, 0, 5),
    stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARG0_LO),
    jump(BPF_JEQ_K, PERSONALITY_QUERY, 2, 0),
    jump(BPF_JSET_K, PERSONALITY_DANGEROUS_FLAGS, 0, 1),
    stmt(BPF_RET_K, errno(EPERM)),
    stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
  );
  prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
  return prog;
}

/** Encodes instructions as `struct sock_filter[]`: u16 code, u8 jt, u8 jf, u32 k, little-endian. */
export function encodeSockFilters(prog: readonly SockFilter[]): Buffer {
  const buf = Buffer.alloc(prog.length * 8);
  prog.forEach((ins, i) => {
    buf.writeUInt16LE(ins.code, i * 8);
    buf.writeUInt8(ins.jt, i * 8 + 2);
    buf.writeUInt8(ins.jf, i * 8 + 3);
    buf.writeUInt32LE(ins.k >>> 0, i * 8 + 4);
  });
  return buf;
}

/** The program bubblewrap reads from `--seccomp FD`. */
export function buildSeccompProgram(): Buffer {
  if (process.arch !== 'x64') {
    // A deny-list written for x86_64 numbers would silently allow everything elsewhere.
    throw new SandboxUnavailableError(
      `the seccomp filter supports x86_64 only; this host is ${process.arch}`,
      {
        hint: 'Run meshd on an x86_64 host; other architectures need their own syscall table.',
      },
    );
  }
  return encodeSockFilters(seccompInstructions());
}
