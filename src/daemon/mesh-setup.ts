// Creating a mesh (`init`) and joining one (`join`): everything written to a data dir before the daemon runs.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { decodeJoinToken, type JoinToken } from '../mesh/join-token.ts';
import { compareKeys, newMeshKey } from '../mesh/mesh-key.ts';
import { DaemonError, DataDirError, TokenError, ValidationError } from '../shared/errors.ts';
import { validateNodeName } from '../state/cluster-doc.ts';
import { type DataDir, defaultListen, type NodeConfig } from './data-dir.ts';

export interface SetupOptions {
  nodeName?: string | undefined;
  listen?: string[] | undefined;
}

/** A node name from the host name, squeezed into the DNS-label form node names use. */
export function defaultNodeName(): string {
  const name = hostname()
    .toLowerCase()
    .split('.')[0]
    ?.replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  return name === undefined || name === '' ? 'node' : name;
}

export async function initMesh(
  dir: DataDir,
  opts: SetupOptions & { meshName?: string | undefined },
): Promise<NodeConfig> {
  if (dir.hasMesh()) {
    const existing = dir.readConfig();
    throw new DataDirError(
      'E_MESH_EXISTS',
      `${dir.path} already belongs to mesh "${existing.meshName}" (${existing.meshId})`,
      {
        hint: 'Start it with `meshd up`, or pick another --data-dir for a new mesh.',
      },
    );
  }
  const meshName = opts.meshName ?? 'mesh';
  validateMeshName(meshName);
  const nodeName = opts.nodeName ?? defaultNodeName();
  validateNodeName(nodeName);
  dir.ensure();
  await dir.createIdentity();
  dir.writeMeshKey(newMeshKey(0));
  const config: NodeConfig = {
    format: 1,
    meshId: `m${randomBytes(6).toString('hex')}`,
    meshName,
    nodeName,
    listen: opts.listen ?? defaultListen,
    bootstrap: [],
    keyEpoch: 0,
    createdAt: new Date().toISOString(),
  };
  dir.writeConfig(config);
  return config;
}

/**
 * Validates the token BEFORE anything touches the disk, then records the mesh in the data dir.
 * Re-joining the same mesh from the same dir is allowed: it refreshes the bootstrap list and, when the token
 * is newer, the mesh key (the way back for a member that missed a key rotation).
 */
export async function joinMesh(dir: DataDir, tokenText: string, opts: SetupOptions): Promise<NodeConfig> {
  const token: JoinToken = decodeJoinToken(tokenText);
  if (opts.nodeName !== undefined) validateNodeName(opts.nodeName);
  if (dir.hasMesh()) {
    const existing = dir.readConfig();
    if (existing.meshId !== token.meshId) {
      throw new DataDirError(
        'E_FOREIGN_MESH',
        `${dir.path} already belongs to mesh "${existing.meshName}" (${existing.meshId}); the token is for mesh "${token.meshName}" (${token.meshId})`,
        { hint: 'Pick another --data-dir to join a second mesh, or run `meshd up` to use the existing one.' },
      );
    }
    const running = dir.runningPid();
    if (running !== undefined) {
      throw new DaemonError('E_ALREADY_RUNNING', `meshd is already running on ${dir.path} (pid ${running})`, {
        hint: 'Stop it first with `meshd down`, then run `meshd join` again (a rejoin keeps identity and pods).',
      });
    }
    // A member that missed a key rotation (offline while a machine was removed) comes back this way: a
    // fresh token carries the current key; its identity, document and pods stay as they are.
    const held = dir.readMeshKey();
    if (token.keyEpoch < held.epoch) {
      throw new TokenError(
        'E_TOKEN_STALE',
        `the join token is stale: it carries mesh key epoch ${token.keyEpoch}, and this node already holds epoch ${held.epoch}`,
        { hint: 'Run `meshd token` on a current member for a fresh token, or just `meshd up` here.' },
      );
    }
    // Same epoch, other key: two rotations raced and this node kept the one the mesh did not settle on
    // (`compareKeys` picks the same winner everywhere); a token from a current member carries the winner.
    const offered = { psk: token.psk, epoch: token.keyEpoch };
    if (compareKeys(offered, held) < 0) dir.writeMeshKey(offered);
    const updated: NodeConfig = {
      ...existing,
      bootstrap: token.bootstrap,
      keyEpoch: Math.max(existing.keyEpoch, token.keyEpoch),
      ...(opts.listen ? { listen: opts.listen } : {}),
    };
    dir.writeConfig(updated);
    return updated;
  }
  const nodeName = opts.nodeName ?? defaultNodeName();
  validateNodeName(nodeName);
  dir.ensure();
  await dir.createIdentity();
  dir.writeMeshKey({ psk: token.psk, epoch: token.keyEpoch });
  const config: NodeConfig = {
    format: 1,
    meshId: token.meshId,
    meshName: token.meshName,
    nodeName,
    listen: opts.listen ?? defaultListen,
    bootstrap: token.bootstrap,
    keyEpoch: token.keyEpoch,
    createdAt: new Date().toISOString(),
  };
  dir.writeConfig(config);
  return config;
}

function validateMeshName(name: string): void {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(name)) {
    throw new ValidationError('E_BAD_MESH_NAME', `mesh name ${JSON.stringify(name)} is not valid`, {
      hint: 'Use 1–63 lowercase letters, digits and dashes, starting and ending with a letter or digit.',
      details: { path: '--name' },
    });
  }
}
