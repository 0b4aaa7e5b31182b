// The node operator's half of the double opt-in: the policy file (policy.yaml in the data dir, or --policy FILE).
//
// It lists what pods may relax on this node: host network, host paths (prefixes, read-only or
// read-write), devices, extra capabilities, running unsandboxed. Its fields are those a pod asks for in
// `spec.security`, validated by the same code. No file means nothing is allowed; a file that cannot be
// read or validated stops the daemon (never silently read as "nothing" or "everything").

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LINUX_CAPABILITIES } from '../runtime/process/sandbox-args.ts';
import { ValidationError } from '../shared/errors.ts';
import type { NodePolicyRecord } from '../state/cluster-doc.ts';
import { isPlainObject } from '../state/merge-patch.ts';
import {
  checkSecurity,
  didYouMean,
  type Issues,
  parseYamlFile,
  type YamlFileKind,
} from '../state/pod-spec.ts';

/** Looked for in the data dir, in this order, when no `--policy FILE` was given; at most one may exist. */
export const POLICY_FILE_NAMES: readonly string[] = Object.freeze([
  'policy.yaml',
  'policy.yml',
  'policy.json',
]);

const maxPolicyBytes = 64 * 1024;

/** A node policy and where it comes from, as every message about it names it. */
export interface LoadedNodePolicy {
  readonly policy: NodePolicyRecord;
  /** The file read, or where the operator would create one (`<data dir>/policy.yaml`) when there is none. */
  readonly file: string;
  /** False when there is no file: nothing is allowed. */
  readonly exists: boolean;
}

/** Nothing allowed: the policy of a node without a policy file. */
export function emptyNodePolicy(file: string): LoadedNodePolicy {
  return { policy: {}, file, exists: false };
}

const reloadHint = 'start meshd again (a running meshd rereads it on SIGHUP)';

function validatePolicy(value: unknown, is: Issues): NodePolicyRecord | undefined {
  const sec = checkSecurity(value, [], is);
  // A capability bwrap does not know would only fail later, at a pod's start: name the typo here
  // (with the other problems, so one round of fixes is enough).
  const caps = isPlainObject(value) && Array.isArray(value.capabilities) ? value.capabilities : [];
  caps.forEach((c, i) => {
    if (typeof c !== 'string') return;
    const bare = c.toUpperCase().replace(/^CAP_/, '');
    if (LINUX_CAPABILITIES.includes(bare)) return;
    const near = didYouMean(bare, LINUX_CAPABILITIES);
    is.add(
      ['capabilities', i],
      `"${c}" is not a Linux capability (${near === undefined ? 'see capabilities(7)' : `did you mean "${near}"?`})`,
    );
  });
  if (sec === undefined) return undefined;
  const out: NodePolicyRecord = {};
  if (sec.hostNetwork !== undefined) out.hostNetwork = sec.hostNetwork;
  if (sec.unsandboxed !== undefined) out.unsandboxed = sec.unsandboxed;
  if (sec.hostPaths !== undefined)
    out.hostPaths = sec.hostPaths.map((h) => ({ path: h.path, readOnly: h.readOnly }));
  if (sec.devices !== undefined) out.devices = [...sec.devices];
  if (sec.capabilities !== undefined) out.capabilities = [...sec.capabilities];
  return out;
}

const policyFileKind: YamlFileKind<NodePolicyRecord> = {
  what: 'node policy',
  codePrefix: 'E_POLICY',
  maxBytes: maxPolicyBytes,
  tooLargeHint: 'A node policy lists a few grants; list host path prefixes rather than every path.',
  oneDocument: 'more than one document (`---`): a node has one policy',
  // An empty file is a policy that allows nothing, like no file at all.
  empty: { value: {} },
  afterFix: reloadHint,
  validate: validatePolicy,
};

/**
 * Parses and validates a node policy file: a mapping with `hostNetwork`, `unsandboxed` (booleans),
 * `hostPaths` (`[{ path: /srv/data, readOnly: true }]`: allowed prefixes; without `readOnly: true` a
 * prefix allows read-write mounts too), `devices` and `capabilities` (lists). Throws ValidationError
 * naming the file, each field path with line:col, what was expected and a suggestion.
 */
export function parseNodePolicy(text: string, file: string): NodePolicyRecord {
  return parseYamlFile(text, file, policyFileKind);
}

/** The file's text, undefined when it does not exist; other read errors are thrown as ValidationError. */
function readIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new ValidationError(
      'E_POLICY_UNREADABLE',
      `cannot read the node policy ${file}: ${(err as Error).message}`,
      {
        hint:
          code === 'EISDIR'
            ? `${file} must be a file: move the directory away.`
            : `Let the user running meshd read ${file}, then ${reloadHint}.`,
        details: { file, path: '' },
        cause: err,
      },
    );
  }
}

/**
 * This node's policy: `file` when given (it must exist: the operator named it), else the one policy file
 * of `dataDir` (POLICY_FILE_NAMES), else none — nothing allowed.
 */
export function loadNodePolicy(opts: { dataDir: string; file?: string | undefined }): LoadedNodePolicy {
  if (opts.file !== undefined) {
    const file = resolve(opts.file);
    const text = readIfExists(file);
    if (text === undefined) {
      throw new ValidationError('E_POLICY_MISSING', `the node policy ${file} does not exist`, {
        hint: `Create it (an empty file allows nothing), or name another one with \`meshd up --policy FILE\`.`,
        details: { file, path: '' },
      });
    }
    return { policy: parseNodePolicy(text, file), file, exists: true };
  }
  const found = POLICY_FILE_NAMES.map((name) => join(opts.dataDir, name)).flatMap((file) => {
    const text = readIfExists(file);
    return text === undefined ? [] : [{ file, text }];
  });
  if (found.length > 1) {
    throw new ValidationError(
      'E_POLICY_AMBIGUOUS',
      `the data dir holds more than one node policy: ${found.map((f) => f.file).join(', ')}`,
      {
        hint: `Keep one of them (merge the grants into it) and remove the others, then ${reloadHint}.`,
        details: { file: found[0]?.file, path: '' },
      },
    );
  }
  const [one] = found;
  if (one === undefined) return emptyNodePolicy(join(opts.dataDir, 'policy.yaml'));
  return { policy: parseNodePolicy(one.text, one.file), file: one.file, exists: true };
}
