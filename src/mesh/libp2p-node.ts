// Builds the libp2p node meshd runs: TCP in a private network, Noise, Yamux, identify, tuned gossipsub.

import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type GossipSub, gossipsub, type Message } from '@libp2p/gossipsub';
import { type Identify, identify } from '@libp2p/identify';
import type { Libp2p, PrivateKey } from '@libp2p/interface';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import type { MeshKeyring } from './mesh-key.ts';
import { type EpochMismatch, keyConfirmingPnet } from './pnet-protector.ts';

export interface MeshServices extends Record<string, unknown> {
  identify: Identify;
  pubsub: GossipSub;
}

export type MeshLibp2p = Libp2p<MeshServices>;

export interface MeshLibp2pOptions {
  privateKey: PrivateKey;
  /** The mesh key for each new connection (read at every handshake). */
  keyring: MeshKeyring;
  /** Told when a handshake fails because the two ends' key epochs differ. */
  onEpochMismatch?: (mismatch: EpochMismatch) => void;
  /** Peers refused at connection time, both ways (machines removed with `meshd node remove`). */
  isDenied?: (peerId: string) => boolean;
  listen: string[];
  dialTimeoutMs: number;
  /** Gossip topics this node takes part in; subscriptions to anything else are ignored. */
  topics: string[];
  /** Largest gossip RPC (one or more messages plus control data) read from a peer. */
  maxGossipRpcBytes: number;
  /** Gossip message id from the message data (deduplication); defaults to SHA-256 of all of it. */
  messageId?: (data: Uint8Array) => Uint8Array;
}

/**
 * Creates the node without starting it, so protocol handlers can be registered before the first peer arrives.
 *
 * Tuning (see STACK-NOTES): every peer on one host shares an IP, so the per-host inbound connection rate
 * limit is raised and loopback is exempt from gossipsub's IP-colocation penalty; peer exchange is on so that
 * leaves pruned by a bootstrap hub learn other peers instead of dropping out of the mesh.
 */
export async function createMeshLibp2p(opts: MeshLibp2pOptions): Promise<MeshLibp2p> {
  const { messageId } = opts;
  const isDenied = (peerId: string): boolean => opts.isDenied?.(peerId) ?? false;
  return createLibp2p<MeshServices>({
    start: false,
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionProtector: keyConfirmingPnet({
      keyring: opts.keyring,
      timeoutMs: opts.dialTimeoutMs,
      ...(opts.onEpochMismatch === undefined ? {} : { onEpochMismatch: opts.onEpochMismatch }),
    }),
    connectionGater: {
      denyDialPeer: (peer) => isDenied(peer.toString()),
      denyInboundEncryptedConnection: (peer) => isDenied(peer.toString()),
      denyOutboundEncryptedConnection: (peer) => isDenied(peer.toString()),
    },
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      dialTimeout: opts.dialTimeoutMs,
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 64,
    },
    // the presence link notices dead peers and measures RTT; the monitor's ping stream per connection every
    // 10 s cost ~a quarter of a core for 20 idle nodes in one process
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictNoSign',
        fallbackToFloodsub: false,
        allowedTopics: opts.topics,
        // the same update may legitimately be re-published after a sync; gossip dedupes it by content
        ignoreDuplicatePublishError: true,
        doPX: true,
        // MeshNode relies on this: a publisher sends its own message to every connected subscriber, so a peer
        // that got it straight from the publisher need not forward it to neighbours that hear the publisher
        // too (see MeshNode.onDocGossip)
        floodPublish: true,
        scoreParams: { IPColocationFactorWhitelist: new Set(['127.0.0.1', '::1']) },
        scoreThresholds: { acceptPXThreshold: 0 },
        maxInboundDataLength: opts.maxGossipRpcBytes,
        ...(messageId === undefined ? {} : { msgIdFn: (msg: Message) => messageId(msg.data) }),
      }),
    },
  });
}
