// Names of meshd's gossip topics and stream protocols, derived from the mesh id, and multiaddr parsing for peers.

import { multiaddr } from '@multiformats/multiaddr';
import { ValidationError } from '../shared/errors.ts';

export interface MeshProtocols {
  /** Yjs updates of the cluster document, each behind its publisher's 8-byte tag. */
  docTopic: string;
  /** Stream protocol of the presence link: signed beacons to each directly connected peer. */
  presenceProtocol: string;
  /** State-vector sync stream protocol. */
  syncProtocol: string;
  /** Questions to one peer (`why`, `logs`), answered with a stream of frames (peer-query.ts). */
  queryProtocol: string;
  /** A rotated mesh key, signed by the member that rotated it (key-rotation.ts). */
  rekeyProtocol: string;
}

const meshIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The topic and protocol names of mesh `meshId`; throws `ValidationError` when the id could not be one. */
export function meshProtocols(meshId: string): MeshProtocols {
  if (!meshIdPattern.test(meshId)) {
    throw new ValidationError(
      'E_MESH_ID_INVALID',
      `mesh id ${JSON.stringify(meshId)} is not 1-64 letters, digits, '.', '_' or '-'`,
      {
        hint: 'Use the mesh id from the join token; do not edit it by hand.',
        details: { path: 'meshId' },
      },
    );
  }
  return {
    docTopic: `/meshd/${meshId}/doc/2`,
    presenceProtocol: `/meshd/${meshId}/presence/2.0.0`,
    syncProtocol: `/meshd/${meshId}/sync/1.0.0`,
    queryProtocol: `/meshd/${meshId}/query/1.0.0`,
    rekeyProtocol: `/meshd/${meshId}/rekey/1.0.0`,
  };
}

/** The peer id at the end of a multiaddr (`.../p2p/<id>`), or undefined; throws on a string that is no multiaddr. */
export function peerIdOfAddr(addr: string): string | undefined {
  const last = multiaddr(addr).getComponents().at(-1);
  return last?.name === 'p2p' ? last.value : undefined;
}

/**
 * `addr` as a full multiaddr ending in `/p2p/<peerId>`, accepting it with or without that suffix.
 * Returns undefined for a malformed address or one that names a different peer.
 */
export function fullPeerAddr(addr: string, peerId: string): string | undefined {
  try {
    const ma = multiaddr(addr);
    const last = ma.getComponents().at(-1);
    if (last?.name === 'p2p') return last.value === peerId ? ma.toString() : undefined;
    return ma.encapsulate(`/p2p/${peerId}`).toString();
  } catch {
    return undefined;
  }
}
