// The double opt-in at run time: a pod gets a relaxed sandbox only where it asked AND this node's policy allows.
//
// `decideSecurity` is pure: what the pod asked for in `spec.security` against the node policy loaded from
// its file (never the copy in the shared document, which any peer can write). Anything asked and not
// allowed refuses the whole start, naming the missing side and the policy line that would grant it; what
// the node allows and the pod did not ask for changes nothing. `resolveGrant` then checks the grant
// against the host as it is (symlinks, devices) and turns it into the driver's SandboxRelaxations.

import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { HostPathMount, SandboxRelaxations } from '../runtime/driver.ts';
import { canonicalCapability } from '../runtime/process/sandbox-args.ts';
import { allowingRule, underPrefix } from '../scheduler/feasibility.ts';
import { MeshdError } from '../shared/errors.ts';
import type { SecuritySpec } from '../state/pod-spec.ts';
import type { LoadedNodePolicy } from './node-policy-file.ts';

/** A host path the pod may mount, and the policy prefix that allows it (re-checked once symlinks resolve). */
export interface GrantedHostPath {
  path: string;
  readOnly: boolean;
  allowedBy: string;
}

/** What the pod gets beyond the default sandbox: asked AND allowed. Plain JSON (it is part of a run's input). */
export interface SecurityGrant {
  hostNetwork?: true;
  unsandboxed?: true;
  hostPaths?: GrantedHostPath[];
  devices?: string[];
  /** Canonical names: `CAP_NET_BIND_SERVICE`. */
  capabilities?: string[];
}

/** One thing the pod asked for that this node does not grant. */
export interface Refusal {
  /** `hostPath /srv/data (read-write)`, `capability CAP_NET_ADMIN`. */
  what: string;
  /** The policy entry that would allow it: field and YAML value (`hostPaths`, `{ path: /srv/data }`). */
  allow?: { field: PolicyField; item: string };
  /** Why no policy can grant it as asked. */
  conflict?: string;
}

type PolicyField = 'hostNetwork' | 'unsandboxed' | 'hostPaths' | 'devices' | 'capabilities';
const policyFields: readonly PolicyField[] = [
  'hostNetwork',
  'unsandboxed',
  'hostPaths',
  'devices',
  'capabilities',
];

/** The outcome for one pod on one node. Plain JSON. */
export type SecurityDecision =
  | { granted: SecurityGrant }
  | { refused: Refusal[]; message: string; hint: string };

/** The pod asked for less isolation than its node policy grants (or for a combination no policy can). */
export class SecurityRefusedError extends MeshdError {}

/** The grant does not fit the host as it is (missing path, a symlink leading out of the allowed prefix). */
export class SecurityGrantError extends MeshdError {}

function hostPathLabel(h: { path: string; readOnly: boolean }): string {
  return `hostPath ${h.path} (${h.readOnly ? 'read-only' : 'read-write'})`;
}

function joinAnd(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** How messages name the policy: its file, or that there is none. */
export function describePolicy(loaded: LoadedNodePolicy): string {
  return loaded.exists
    ? `this node's policy (${loaded.file})`
    : `this node's policy (none: ${loaded.file} does not exist, so nothing is allowed)`;
}

/**
 * What pod `asked` gets on a node with policy `loaded`: everything it asked for, or — if any of it is not
 * allowed — a refusal listing each missing grant. Granted ⊆ asked ∩ allowed, always.
 */
export function decideSecurity(asked: SecuritySpec | undefined, loaded: LoadedNodePolicy): SecurityDecision {
  const allow = loaded.policy;
  const granted: SecurityGrant = {};
  const refused: Refusal[] = [];
  if (asked?.hostNetwork === true) {
    if (allow.hostNetwork === true) granted.hostNetwork = true;
    else refused.push({ what: 'hostNetwork', allow: { field: 'hostNetwork', item: 'true' } });
  }
  if (asked?.unsandboxed === true) {
    if (allow.unsandboxed === true) granted.unsandboxed = true;
    else refused.push({ what: 'unsandboxed', allow: { field: 'unsandboxed', item: 'true' } });
  }
  const hostPaths: GrantedHostPath[] = [];
  const devices: string[] = [];
  const capabilities: string[] = [];
  for (const h of asked?.hostPaths ?? []) {
    const rule = allowingRule(h, allow.hostPaths ?? []);
    if (rule !== undefined) {
      hostPaths.push({ path: h.path, readOnly: h.readOnly, allowedBy: rule });
      continue;
    }
    const readOnlyOnly =
      !h.readOnly && allowingRule({ ...h, readOnly: true }, allow.hostPaths ?? []) !== undefined;
    refused.push({
      what: readOnlyOnly
        ? `hostPath ${h.path} (read-write; the policy allows it read-only)`
        : hostPathLabel(h),
      allow: { field: 'hostPaths', item: `{ path: ${h.path}${h.readOnly ? ', readOnly: true' : ''} }` },
    });
  }
  for (const d of asked?.devices ?? []) {
    if ((allow.devices ?? []).includes(d)) {
      if (!devices.includes(d)) devices.push(d);
    } else refused.push({ what: `device ${d}`, allow: { field: 'devices', item: d } });
  }
  const allowedCaps = new Set((allow.capabilities ?? []).map(canonicalCapability));
  for (const c of asked?.capabilities ?? []) {
    const cap = canonicalCapability(c);
    if (allowedCaps.has(cap)) {
      if (!capabilities.includes(cap)) capabilities.push(cap);
    } else refused.push({ what: `capability ${cap}`, allow: { field: 'capabilities', item: cap.slice(4) } });
  }
  if (hostPaths.length > 0) granted.hostPaths = hostPaths;
  if (devices.length > 0) granted.devices = devices;
  if (capabilities.length > 0) granted.capabilities = capabilities;
  if (asked?.unsandboxed === true && (asked.capabilities ?? []).length > 0) {
    // Capabilities are given inside the sandbox; unsandboxed, the pod is an ordinary process of the sandbox user.
    refused.push({
      what: 'capabilities together with unsandboxed',
      conflict: 'an unsandboxed pod runs as an ordinary user without capabilities',
    });
  }
  if (refused.length === 0) return { granted };
  return { refused, ...refusalText(refused, loaded) };
}

/** The policy lines that would allow every refusal: `hostPaths: [{ path: /a }, { path: /b }]`, one per field. */
function policyLines(refused: readonly Refusal[]): string[] {
  return policyFields.flatMap((field) => {
    const items = [...new Set(refused.flatMap((r) => (r.allow?.field === field ? [r.allow.item] : [])))];
    if (items.length === 0) return [];
    return field === 'hostNetwork' || field === 'unsandboxed'
      ? [`${field}: true`]
      : [`${field}: [${items.join(', ')}]`];
  });
}

function refusalText(
  refused: readonly Refusal[],
  loaded: LoadedNodePolicy,
): { message: string; hint: string } {
  const byPolicy = refused.filter((r) => r.allow !== undefined);
  const conflicts = refused.filter((r) => r.conflict !== undefined);
  const parts: string[] = [];
  if (byPolicy.length > 0) {
    const them = byPolicy.length === 1 ? 'it' : 'them';
    const lines = joinAnd(policyLines(byPolicy).map((l) => `\`${l}\``));
    const fix = loaded.exists ? `add ${lines} to it` : `create ${loaded.file} with ${lines}`;
    parts.push(
      `pod asks for ${joinAnd(byPolicy.map((r) => r.what))} but ${describePolicy(loaded)} does not allow ${them}; the node operator can ${fix}`,
    );
  }
  for (const c of conflicts) parts.push(`pod asks for ${c.what}, which no node grants: ${c.conflict}`);
  const hints: string[] = [];
  if (byPolicy.length > 0)
    hints.push(
      `Either the node operator allows it in ${loaded.file} and restarts meshd (or sends it SIGHUP), or the pod stops asking for it in spec.security.`,
    );
  if (conflicts.length > 0) hints.push('Ask for capabilities or for unsandboxed in spec.security, not both.');
  return { message: parts.join('; '), hint: hints.join(' ') };
}

/** True when the grant relaxes nothing: the pod runs in the default sandbox. */
export function grantsNothing(grant: SecurityGrant): boolean {
  return (
    grant.hostNetwork !== true &&
    grant.unsandboxed !== true &&
    (grant.hostPaths ?? []).length === 0 &&
    (grant.devices ?? []).length === 0 &&
    (grant.capabilities ?? []).length === 0
  );
}

/** What of a decision decides how the slot runs (hashed into the slot's spec hash: a change restarts it). */
export function decisionEssence(decision: SecurityDecision): unknown {
  if ('refused' in decision) return { refused: decision.refused.map((r) => r.what) };
  const g = decision.granted;
  return {
    ...(g.hostNetwork === true ? { hostNetwork: true } : {}),
    ...(g.unsandboxed === true ? { unsandboxed: true } : {}),
    ...(g.hostPaths === undefined
      ? {}
      : { hostPaths: g.hostPaths.map((h) => ({ path: h.path, readOnly: h.readOnly })) }),
    ...(g.devices === undefined ? {} : { devices: g.devices }),
    ...(g.capabilities === undefined ? {} : { capabilities: g.capabilities }),
  };
}

/** The error a refused decision starts nothing with (its hint names both ways out). */
export function refusalError(
  decision: Extract<SecurityDecision, { refused: Refusal[] }>,
): SecurityRefusedError {
  return new SecurityRefusedError('E_SECURITY_NOT_ALLOWED', decision.message, {
    hint: decision.hint,
    details: { refused: decision.refused.map((r) => r.what) },
  });
}

/**
 * Checks a grant against the host and returns what the driver applies. A host path must exist, and with
 * its symlinks resolved still lie under the prefix that allowed it (a symlink inside /srv/data must not
 * lead to /etc); the resolved path is what gets bound. A device must be a device node.
 * (A component swapped for a symlink between this check and the mount is not caught: keep allowed
 * prefixes writable only by those who could mount them anyway.)
 */
export async function resolveGrant(grant: SecurityGrant): Promise<SandboxRelaxations> {
  const hostPaths: HostPathMount[] = [];
  for (const h of grant.hostPaths ?? []) {
    const source = await realpath(h.path).catch((err: NodeJS.ErrnoException) => {
      throw new SecurityGrantError(
        'E_HOST_PATH',
        `hostPath ${h.path} ${err.code === 'ENOENT' ? 'does not exist on this node' : `cannot be resolved: ${err.message}`}`,
        {
          hint: `Create ${h.path} on this node (the pod runs as uid 65534: give it ${h.readOnly ? 'read' : 'write'} access), or change spec.security.hostPaths.`,
          details: { path: h.path },
        },
      );
    });
    const prefix = await realpath(h.allowedBy).catch(() => posix.normalize(h.allowedBy));
    if (!underPrefix(source, prefix)) {
      throw new SecurityGrantError(
        'E_HOST_PATH',
        `hostPath ${h.path} resolves to ${source}, outside ${h.allowedBy} which the node policy allows`,
        {
          hint: `A symlink leads out of the allowed prefix: ask for the real path, or the node operator allows ${source} in the node policy.`,
          details: { path: h.path, resolved: source, allowedBy: h.allowedBy },
        },
      );
    }
    hostPaths.push({ path: h.path, source, readOnly: h.readOnly });
  }
  for (const d of grant.devices ?? []) {
    const st = await stat(d).catch(() => undefined);
    if (st === undefined || !(st.isCharacterDevice() || st.isBlockDevice())) {
      throw new SecurityGrantError(
        'E_DEVICE',
        `device ${d} ${st === undefined ? 'does not exist on this node' : 'is not a device node'}`,
        {
          hint: `Load the driver that provides ${d} on this node, or remove it from spec.security.devices.`,
          details: { device: d },
        },
      );
    }
  }
  const out: {
    -readonly [K in keyof SandboxRelaxations]: SandboxRelaxations[K];
  } = {};
  if (grant.hostNetwork === true) out.hostNetwork = true;
  if (grant.unsandboxed === true) out.unsandboxed = true;
  if (hostPaths.length > 0) out.hostPaths = hostPaths;
  if ((grant.devices ?? []).length > 0) out.devices = [...(grant.devices ?? [])];
  if ((grant.capabilities ?? []).length > 0) out.capabilities = [...(grant.capabilities ?? [])];
  return out;
}

/** One line for `meshd why`: `hostPath /srv/data (read-only), capability CAP_NET_ADMIN`, or `nothing`. */
export function describeGrant(grant: SecurityGrant): string {
  const parts: string[] = [];
  if (grant.hostNetwork === true) parts.push('hostNetwork');
  if (grant.unsandboxed === true) parts.push('unsandboxed');
  for (const h of grant.hostPaths ?? []) parts.push(hostPathLabel(h));
  for (const d of grant.devices ?? []) parts.push(`device ${d}`);
  for (const c of grant.capabilities ?? []) parts.push(`capability ${c}`);
  return parts.length === 0 ? 'nothing' : parts.join(', ');
}
