// Private-network protection: @libp2p/pnet plus a key confirmation, so a peer with the wrong mesh key fails at once.

import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AbortOptions, ConnectionProtector, MessageStream } from '@libp2p/interface';
import { preSharedKey } from '@libp2p/pnet';
import { byteStream } from '@libp2p/utils';
import { MeshdError } from '../shared/errors.ts';
import { swarmKeyFromPsk } from './pnet-key.ts';

const tagBytes = 16;

export interface KeyConfirmingPnetInit {
  /** The raw 32-byte mesh key. */
  psk: Uint8Array;
  /** Bound of the nonce exchange and of the confirmation when libp2p passes no signal. */
  timeoutMs: number;
}

/**
 * With plain pnet a wrong key is only noticed when the Noise handshake reads garbage, and when that garbage
 * happens to announce a long message both ends wait for bytes that never come: the dial hangs until its
 * timeout. So right after pnet, each end sends a 16-byte tag derived from the key and its role, and checks
 * the other's: with the wrong key it decrypts to something else and the connection is dropped within one
 * round trip. Tags differ by direction, so reflecting a peer's own bytes back does not pass. This is a fast
 * failure, not the access control: pnet and Noise still do that.
 */
export function keyConfirmingPnet(init: KeyConfirmingPnetInit): () => ConnectionProtector {
  const pnet = preSharedKey({ psk: swarmKeyFromPsk(init.psk), timeout: init.timeoutMs });
  const tag = (role: string) =>
    createHmac('sha256', init.psk).update(`meshd/pnet-confirm/1/${role}`).digest().subarray(0, tagBytes);
  const dialerTag = tag('dialer');
  const listenerTag = tag('listener');
  return () => {
    const inner = pnet();
    return {
      async protect(connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
        const signal = options?.signal ?? AbortSignal.timeout(init.timeoutMs);
        const boxed = await inner.protect(connection, { ...options, signal });
        const dialing = connection.direction === 'outbound';
        const bytes = byteStream(boxed);
        const [theirs] = await Promise.all([
          bytes.read({ bytes: tagBytes, signal }),
          bytes.write(dialing ? dialerTag : listenerTag, { signal }),
        ]);
        if (!timingSafeEqual(theirs.subarray(), dialing ? listenerTag : dialerTag)) {
          const err = new MeshdError('E_MESH_KEY_MISMATCH', 'the remote peer uses a different mesh key', {
            hint: 'Both peers must have joined with a token of the same mesh; get a fresh token with `meshd token`.',
          });
          boxed.abort(err);
          throw err;
        }
        return bytes.unwrap();
      },
    };
  };
}
