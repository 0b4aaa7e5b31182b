// The bubblewrap command line for one container: namespaces, mounts, environment (pure, no I/O).
//
// Secure by default: new user/pid/ipc/uts/cgroup namespaces, uid/gid 65534, no capabilities,
// no-new-privileges (bwrap always sets it), a root filesystem that is an empty read-only tmpfs holding
// only a read-only /usr, a short read-only allow-list from /etc, private /tmp and /dev/shm, a minimal
// /dev, a fresh /proc, and one writable bind: the container's work dir as /work (the cwd).
// The environment is cleared; only PATH, HOME, the spec's variables, MESHD_* and PORT_* are set.
//
// Network: the sandbox shares the host network namespace for now (no --unshare-net): the node allocates
// ports and passes them as PORT_<NAME>, and pods reach each other on 127.0.0.1. A per-pod network
// namespace comes with the IPv6 pod networking of src/net.
//
// Relaxations (double opt-in, see SandboxRelaxations) add to this, never replace it:
// - hostPaths: `--ro-bind`/`--bind` of the (symlink-resolved) host path at the path the pod asked for.
// - devices: `--dev-bind` of that node only; the rest of /dev stays the minimal one.
// - capabilities: `--cap-add CAP_X` after `--cap-drop ALL`. The pod stays uid 65534: bwrap 0.8 keeps added
//   capabilities as ambient ones for a non-zero uid (measured: CapEff/CapAmb hold exactly them), so root
//   inside the pod is never needed. They are capabilities of the pod's own user namespace: they act on what
//   that namespace owns (its mounts, pids, ipc, hostname), not on the host network namespace it shares
//   (NET_BIND_SERVICE does not allow ports below 1024 there) nor on host files of unmapped owners.
// - hostNetwork: nothing to add. Known gap: every pod shares the host network namespace today, so a pod
//   without hostNetwork is exactly as isolated as before (no worse) but not yet better; the grant is
//   recorded so that the per-pod namespaces of src/net can withhold the host network from everyone else.
// - unsandboxed: no bwrap at all (see `gateArgv`); only cgroup limits, the sandbox user and the cleared
//   environment remain.

import { ValidationError } from '../../shared/errors.ts';
import type { SandboxRelaxations } from '../driver.ts';

export const SANDBOX_UID = 65534;
export const SANDBOX_GID = 65534;
export const SANDBOX_PATH = '/usr/local/bin:/usr/bin:/bin';
export const SANDBOX_HOME = '/tmp';
export const SANDBOX_WORK_DIR = '/work';
export const DEFAULT_TMP_BYTES = 64 * 1024 * 1024;

/**
 * Read-only from the host's /etc, when present: name resolution (the pod shares the host network),
 * TLS roots, time zone, the dynamic linker cache, and Debian's alternatives (many /usr/bin entries are
 * symlinks into /etc/alternatives). Nothing else of the host is visible: no passwd, no shadow, no keys.
 */
export const etcReadOnly: readonly string[] = [
  '/etc/resolv.conf',
  '/etc/hosts',
  '/etc/nsswitch.conf',
  '/etc/host.conf',
  '/etc/gai.conf',
  '/etc/localtime',
  '/etc/ld.so.cache',
  '/etc/ssl/certs',
  '/etc/ca-certificates',
  '/etc/alternatives',
];

export interface SandboxEnvInput {
  env: Readonly<Record<string, string>>;
  podKey: string;
  container: string;
  leaseEpoch: number;
  ports: Readonly<Record<string, number>>;
  /** The pod's name for MESHD_POD when `podKey` names one slot of it (`web.0`); `podKey` otherwise. */
  podName?: string;
  /** Replica slot, as MESHD_SLOT. */
  slot?: number;
  /** The node running the container, as MESHD_NODE. */
  node?: string;
}

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;
const containerNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Rejects a string bwrap cannot carry: `--args` is NUL-separated, so a NUL would smuggle in options. */
function checkNoNul(value: string, path: string): void {
  if (value.includes('\0')) {
    throw new ValidationError('E_SPEC_INVALID', `${path} contains a NUL byte`, {
      hint: 'Remove the NUL byte; arguments and variables are C strings.',
      details: { path },
    });
  }
}

export function checkContainerName(name: string): void {
  if (!containerNamePattern.test(name)) {
    throw new ValidationError('E_SPEC_INVALID', `container name ${JSON.stringify(name)} is not allowed`, {
      hint: "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit.",
      details: { path: 'container.name' },
    });
  }
}

/** `PORT_<NAME>` for a port name: upper case, anything but letters and digits becomes '_'. */
export function portEnvName(portName: string): string {
  return `PORT_${portName.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`;
}

/** The complete environment of the container: base, spec, then the reserved MESHD_* and PORT_*. */
export function sandboxEnv(input: SandboxEnvInput): Record<string, string> {
  const out: Record<string, string> = { PATH: SANDBOX_PATH, HOME: SANDBOX_HOME };
  for (const [name, value] of Object.entries(input.env)) {
    const path = `containers.${input.container}.env.${name}`;
    if (!envNamePattern.test(name)) {
      throw new ValidationError('E_SPEC_INVALID', `${path}: ${JSON.stringify(name)} is not a variable name`, {
        hint: 'Use letters, digits and _, not starting with a digit.',
        details: { path },
      });
    }
    if (name.startsWith('MESHD_') || name.startsWith('PORT_')) {
      throw new ValidationError('E_SPEC_INVALID', `${path}: MESHD_* and PORT_* are set by meshd`, {
        hint: 'Rename the variable; meshd sets MESHD_* and PORT_<NAME> itself.',
        details: { path },
      });
    }
    checkNoNul(value, path);
    out[name] = value;
  }
  out.MESHD_POD = input.podName ?? input.podKey;
  out.MESHD_CONTAINER = input.container;
  out.MESHD_LEASE_EPOCH = String(input.leaseEpoch);
  if (input.slot !== undefined) out.MESHD_SLOT = String(input.slot);
  if (input.node !== undefined) out.MESHD_NODE = input.node;
  for (const [name, port] of Object.entries(input.ports)) {
    const path = `containers.${input.container}.ports.${name}`;
    const envName = portEnvName(name);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ValidationError('E_SPEC_INVALID', `${path}: ${port} is not a TCP/UDP port`, {
        hint: 'Ports are integers from 1 to 65535.',
        details: { path },
      });
    }
    if (out[envName] !== undefined) {
      throw new ValidationError('E_SPEC_INVALID', `${path}: two ports map to ${envName}`, {
        hint: 'Give the ports names that differ in letters or digits.',
        details: { path },
      });
    }
    out[envName] = String(port);
  }
  checkNoNul(input.podKey, 'podKey');
  for (const [field, value] of [
    ['podName', input.podName],
    ['node', input.node],
  ] as const) {
    if (value !== undefined) checkNoNul(value, field);
  }
  return out;
}

/** Every Linux capability name bwrap knows (`capabilities(7)`, up to Linux 6.1), without `CAP_`. */
export const LINUX_CAPABILITIES: readonly string[] = Object.freeze([
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
]);

/** `NET_BIND_SERVICE`, `cap_net_bind_service` and `CAP_NET_BIND_SERVICE` all name `CAP_NET_BIND_SERVICE`. */
export function canonicalCapability(name: string): string {
  const upper = name.toUpperCase();
  return upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
}

/** An absolute path without `.`/`..` segments or NUL: what bwrap may bind, and nothing it could misread. */
function checkMountPath(path: string, field: string): void {
  checkNoNul(path, field);
  if (!path.startsWith('/') || path.split('/').some((seg) => seg === '.' || seg === '..')) {
    throw new ValidationError('E_SPEC_INVALID', `${field}: ${JSON.stringify(path)} is not an absolute path`, {
      hint: 'Give an absolute path without . or .. segments.',
      details: { path: field },
    });
  }
}

/** The bwrap options a relaxation adds, grouped by where they go in the command line. */
function relaxationArgs(relax: SandboxRelaxations | undefined): {
  caps: string[];
  devs: string[];
  binds: string[];
} {
  const caps: string[] = [];
  const devs: string[] = [];
  const binds: string[] = [];
  if (relax === undefined) return { caps, devs, binds };
  for (const name of relax.capabilities ?? []) {
    const cap = canonicalCapability(name);
    if (!LINUX_CAPABILITIES.includes(cap.slice(4))) {
      throw new ValidationError(
        'E_SPEC_INVALID',
        `security.capabilities: ${JSON.stringify(name)} is not a Linux capability`,
        {
          hint: 'Name a capability of capabilities(7), e.g. NET_BIND_SERVICE.',
          details: { path: 'security.capabilities' },
        },
      );
    }
    caps.push('--cap-add', cap);
  }
  for (const dev of relax.devices ?? []) {
    checkMountPath(dev, 'security.devices');
    if (!dev.startsWith('/dev/')) {
      throw new ValidationError(
        'E_SPEC_INVALID',
        `security.devices: ${JSON.stringify(dev)} is not under /dev`,
        {
          hint: 'Give a device node path such as /dev/fuse.',
          details: { path: 'security.devices' },
        },
      );
    }
    devs.push('--dev-bind', dev, dev);
  }
  for (const m of relax.hostPaths ?? []) {
    checkMountPath(m.path, 'security.hostPaths.path');
    checkMountPath(m.source, 'security.hostPaths.source');
    binds.push(m.readOnly ? '--ro-bind' : '--bind', m.source, m.path);
  }
  return { caps, devs, binds };
}

export interface SandboxPlan {
  command: readonly string[];
  /** The complete environment (from `sandboxEnv`). */
  env: Readonly<Record<string, string>>;
  hostname: string;
  /** Absolute host path bound read-write on /work. */
  workDir: string;
  /** Host files bound read-only on /etc/passwd and /etc/group (so uid 65534 has a name). */
  passwdFile: string | undefined;
  groupFile: string | undefined;
  tmpBytes: number;
  /** Granted relaxations; absent (or empty) gives exactly the default sandbox's options. */
  relax?: SandboxRelaxations;
}

export interface SandboxArgs {
  /** Options, passed NUL-separated through `--args FD` (keeps env values out of the host's `ps`). */
  options: string[];
  /** argv after `--`. */
  command: string[];
}

/** bubblewrap options for `plan`. Throws ValidationError on anything bwrap could misread. */
export function buildSandboxArgs(plan: SandboxPlan): SandboxArgs {
  const [program] = plan.command;
  if (program === undefined || program === '') {
    throw new ValidationError('E_SPEC_INVALID', 'container command is empty', {
      hint: 'Set command to the program and its arguments, e.g. ["python3", "-m", "http.server"].',
      details: { path: 'container.command' },
    });
  }
  plan.command.forEach((arg, i) => {
    checkNoNul(arg, `container.command[${i}]`);
  });
  if (!plan.workDir.startsWith('/')) throw new Error(`work dir must be absolute: ${plan.workDir}`);
  checkNoNul(plan.workDir, 'workDir');
  if (!Number.isSafeInteger(plan.tmpBytes) || plan.tmpBytes <= 0) {
    throw new ValidationError('E_SPEC_INVALID', `limits.tmpBytes ${plan.tmpBytes} is not a positive size`, {
      hint: 'Give the size of /tmp in bytes.',
      details: { path: 'limits.tmpBytes' },
    });
  }
  const relax = relaxationArgs(plan.relax);

  const o: string[] = [
    // Namespaces. The network namespace is shared with the host (see the module comment).
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    // Nested user namespaces are also refused by seccomp; this is the second lock.
    '--disable-userns',
    '--uid',
    String(SANDBOX_UID),
    '--gid',
    String(SANDBOX_GID),
    '--hostname',
    plan.hostname,
    '--cap-drop',
    'ALL',
    ...relax.caps,
    // The supervisor is the parent: the container dies with it, never with the daemon.
    '--die-with-parent',
    // A new session: the container cannot push input into a terminal (TIOCSTI).
    '--new-session',
    // Filesystem: an empty root, made read-only at the end.
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/bin',
    '/bin',
    '--symlink',
    'usr/sbin',
    '/sbin',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
  ];
  for (const path of etcReadOnly) o.push('--ro-bind-try', path, path);
  if (plan.passwdFile !== undefined) o.push('--ro-bind', plan.passwdFile, '/etc/passwd');
  if (plan.groupFile !== undefined) o.push('--ro-bind', plan.groupFile, '/etc/group');
  o.push(
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    ...relax.devs,
    '--size',
    String(plan.tmpBytes),
    '--tmpfs',
    '/dev/shm',
    '--size',
    String(plan.tmpBytes),
    '--tmpfs',
    '/tmp',
    '--bind',
    plan.workDir,
    SANDBOX_WORK_DIR,
    // Host paths come last so that they, not the defaults, are what the pod sees at their paths.
    ...relax.binds,
    '--chdir',
    SANDBOX_WORK_DIR,
    // /dev's own tmpfs would otherwise accept files; device nodes are separate binds and still work.
    '--remount-ro',
    '/dev',
    '--remount-ro',
    '/',
    '--clearenv',
  );
  for (const [name, value] of Object.entries(plan.env)) {
    checkNoNul(name, `env name ${name}`);
    checkNoNul(value, `env.${name}`);
    o.push('--setenv', name, value);
  }
  return { options: o, command: [...plan.command] };
}

export interface SupervisorFds {
  args: number;
  seccomp: number;
  status: number;
  block: number;
}

/**
 * The argv the supervisor execs: its own fds first, then `--args` (spliced in place by bwrap), then the
 * command. `--block-fd` holds the sandbox before the command forks, so the supervisor can move bwrap's
 * processes into the cgroup with nothing yet running inside.
 */
export function bwrapArgv(fds: SupervisorFds, command: readonly string[]): string[] {
  return [
    '--seccomp',
    String(fds.seccomp),
    '--json-status-fd',
    String(fds.status),
    '--block-fd',
    String(fds.block),
    '--args',
    String(fds.args),
    '--',
    ...command,
  ];
}

/**
 * The script of an unsandboxed container's gate: `sh` waits on fd 3 until the supervisor has moved it
 * into the container's cgroup, then execs the command in place (same pid). A failed exec prints
 * `meshd-gate: 1: exec: CMD: not found` (dash) and exits 127. If the supervisor dies before it says go
 * (fd 3 reaches its end with no line), the gate exits 125 instead of running the command unconfined.
 */
export const GATE_SCRIPT = 'read -r _ <&3 || exit 125; exec "$@" 3<&-';
export const GATE_NAME = 'meshd-gate';

/** argv of an unsandboxed container: `/bin/sh -c GATE_SCRIPT meshd-gate CMD ARGS...`. */
export function gateArgv(command: readonly string[]): string[] {
  const [program] = command;
  if (program === undefined || program === '') {
    throw new ValidationError('E_SPEC_INVALID', 'container command is empty', {
      hint: 'Set command to the program and its arguments, e.g. ["python3", "-m", "http.server"].',
      details: { path: 'container.command' },
    });
  }
  command.forEach((arg, i) => {
    checkNoNul(arg, `container.command[${i}]`);
  });
  return ['/bin/sh', '-c', GATE_SCRIPT, GATE_NAME, ...command];
}

/** NUL-terminated options, the format of `--args FD`. */
export function encodeArgs(options: readonly string[]): Buffer {
  return Buffer.from(options.map((a) => `${a}\0`).join(''), 'utf8');
}

/** /etc/passwd and /etc/group contents naming only the sandbox user. */
export function sandboxIdentityFiles(): { passwd: string; group: string } {
  return {
    passwd: `nobody:x:${SANDBOX_UID}:${SANDBOX_GID}:nobody:${SANDBOX_HOME}:/usr/sbin/nologin\n`,
    group: `nogroup:x:${SANDBOX_GID}:\n`,
  };
}
