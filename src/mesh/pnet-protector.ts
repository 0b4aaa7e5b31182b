// Connection protection: key epoch hello, the private network (private-network.ts), and a key confirmation.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type {
  AbortOptions,
  ConnectionProtector,
  MessageStream,
  MultiaddrConnection,
} from '@libp2p/interface';
import { byteStream } from '@libp2p/utils';
import { MeshdError } from '../shared/errors.ts';
import type { MeshKey, MeshKeyring } from './mesh-key.ts';
import { NONCE_BYTES, PrivateStream } from './private-network.ts';

const tagBytes = 16;
const epochBytes = 4;

/** What a handshake learned when the two ends hold keys of different epochs. */
export interface EpochMismatch {
  localEpoch: number;
  remoteEpoch: number;
  /** `inbound` when the remote end dialled us. */
  direction: 'inbound' | 'outbound';
  /** The remote end's address as the transport saw it. */
  remoteAddr: string;
}

export interface KeyConfirmingPnetInit {
  /** The key for each new connection, read at every handshake (a rotation applies to the next one). */
  keyring: MeshKeyring;
  /** Bound of the nonce exchange and of the confirmation when libp2p passes no signal. */
  timeoutMs: number;
  /** Told about every handshake that failed because the two ends' key epochs differ. */
  onEpochMismatch?: (mismatch: EpochMismatch) => void;
}

/**
 * With a private network alone, a wrong key is only noticed when the Noise handshake reads garbage, and when that garbage
 * happens to announce a long message both ends wait for bytes that never come: the dial hangs until its
 * timeout. So right after pnet, each end sends a 16-byte tag derived from the key and its role, and checks
 * the other's: with the wrong key it decrypts to something else and the connection is dropped within one
 * round trip. Tags differ by direction, so reflecting a peer's own bytes back does not pass. This is a fast
 * failure, not the access control: pnet and Noise still do that.
 *
 * Before the private network, each end sends its key epoch in the clear (4 bytes; the epoch is no secret). Different
 * epochs mean one end missed a rotation (`meshd node remove`): the handshake stops at once with an error
 * that says which end is stale and what to do, instead of a bare "different mesh key".
 */
export function keyConfirmingPnet(init: KeyConfirmingPnetInit): () => ConnectionProtector {
  let cached: { key: MeshKey; dialer: Buffer; listener: Buffer } | undefined;
  const tagsFor = (key: MeshKey) => {
    if (cached?.key !== key) {
      const tag = (role: string) =>
        createHmac('sha256', key.psk)
          .update(`meshd/pnet-confirm/2/${key.epoch}/${role}`)
          .digest()
          .subarray(0, tagBytes);
      cached = { key, dialer: tag('dialer'), listener: tag('listener') };
    }
    return cached;
  };
  return () => ({
    async protect(connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
      const signal = options?.signal ?? AbortSignal.timeout(init.timeoutMs);
      const dialing = connection.direction === 'outbound';
      const key = init.keyring.current();
      // In the clear, both ways at once: the key epoch (4 bytes), then the nonce of the private network.
      const plain = byteStream(connection);
      const hello = new Uint8Array(epochBytes + NONCE_BYTES);
      new DataView(hello.buffer).setUint32(0, key.epoch);
      hello.set(randomBytes(NONCE_BYTES), epochBytes);
      const [theirs] = await Promise.all([
        plain.read({ bytes: hello.byteLength, signal }),
        plain.write(hello, { signal }),
      ]);
      const theirHello = theirs.subarray();
      const remoteEpoch = new DataView(theirHello.buffer, theirHello.byteOffset, epochBytes).getUint32(0);
      const raw = plain.unwrap() as MultiaddrConnection;
      if (remoteEpoch !== key.epoch) {
        const mismatch: EpochMismatch = {
          localEpoch: key.epoch,
          remoteEpoch,
          direction: dialing ? 'outbound' : 'inbound',
          remoteAddr: remoteAddrOf(connection),
        };
        init.onEpochMismatch?.(mismatch);
        const err = epochMismatchError(mismatch);
        raw.abort(err);
        throw err;
      }
      const boxed = new PrivateStream({
        maConn: raw,
        psk: key.psk,
        localNonce: hello.subarray(epochBytes),
        remoteNonce: theirHello.slice(epochBytes),
        log: raw.log.newScope('meshd-pnet'),
      });
      const { dialer, listener } = tagsFor(key);
      const bytes = byteStream(boxed);
      const [tag] = await Promise.all([
        bytes.read({ bytes: tagBytes, signal }),
        bytes.write(dialing ? dialer : listener, { signal }),
      ]);
      if (!timingSafeEqual(tag.subarray(), dialing ? listener : dialer)) {
        const err = new MeshdError('E_MESH_KEY_MISMATCH', 'the remote peer uses a different mesh key', {
          hint: 'Both peers must have joined with a token of the same mesh; get a fresh token with `meshd token`.',
        });
        boxed.abort(err);
        throw err;
      }
      return bytes.unwrap();
    },
  });
}

/** The error a handshake fails with when the ends' key epochs differ, saying which end must act. */
export function epochMismatchError(m: EpochMismatch): MeshdError {
  if (m.remoteEpoch > m.localEpoch) {
    return new MeshdError(
      'E_MESH_KEY_STALE',
      `this node's mesh key is stale (key epoch ${m.localEpoch}; the mesh has rotated to epoch ${m.remoteEpoch}, because a machine was removed)`,
      {
        hint: 'Run `meshd token` on a current member and `meshd join <token>` here: the node keeps its identity, pods and data.',
        details: { localEpoch: m.localEpoch, remoteEpoch: m.remoteEpoch },
      },
    );
  }
  return new MeshdError(
    'E_MESH_PEER_STALE',
    `the remote peer's mesh key is stale (key epoch ${m.remoteEpoch}; this mesh is at epoch ${m.localEpoch})`,
    {
      hint: 'It missed a key rotation or was removed; if it should be a member, run `meshd join <token>` on it with a token from `meshd token`.',
      details: { localEpoch: m.localEpoch, remoteEpoch: m.remoteEpoch },
    },
  );
}

/** The transport's remote address when the stream is a raw connection (it is, for the protector). */
function remoteAddrOf(connection: MessageStream): string {
  const addr = (connection as Partial<MultiaddrConnection>).remoteAddr;
  return addr === undefined ? 'unknown' : addr.toString();
}
