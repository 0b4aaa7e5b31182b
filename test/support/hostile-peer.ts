// A hostile mesh member for tests: meshd's own libp2p stack and the mesh key, but none of MeshNode's checks or manners.

import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { createMeshLibp2p, type MeshLibp2p } from '../../src/mesh/libp2p-node.ts';
import { type MeshKey, MeshKeyring } from '../../src/mesh/mesh-key.ts';
import { meshProtocols } from '../../src/mesh/mesh-protocols.ts';

export interface HostilePeer {
  libp2p: MeshLibp2p;
  key: PrivateKey;
  peerId: string;
}

/**
 * A started libp2p node built exactly like a daemon's (pnet with key confirmation, Noise, Yamux, identify,
 * gossipsub on the doc topic) that listens on loopback: its bytes pass the mesh key and reach the protocol
 * handlers. It registers no meshd protocol of its own; the caller stops it.
 */
export async function hostilePeer(opts: { meshKey: MeshKey; meshId: string }): Promise<HostilePeer> {
  const key = await generateKeyPair('Ed25519');
  const libp2p = await createMeshLibp2p({
    privateKey: key,
    keyring: new MeshKeyring(opts.meshKey),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    dialTimeoutMs: 5000,
    topics: [meshProtocols(opts.meshId).docTopic],
    maxGossipRpcBytes: 8 * 1024 * 1024,
  });
  await libp2p.start();
  return { libp2p, key, peerId: libp2p.peerId.toString() };
}
