// Converts the mesh's 32-byte pre-shared key to and from libp2p's 95-byte swarm key file format.

import { ValidationError } from '../shared/errors.ts';

/** Length of the raw pre-shared key carried in the join token. */
export const PSK_BYTES = 32;

const header = '/key/swarm/psk/1.0.0/\n/base16/\n';

/** Builds the swarm key `@libp2p/pnet` expects (`/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>`) from raw psk bytes. */
export function swarmKeyFromPsk(psk: Uint8Array): Uint8Array {
  if (psk.byteLength !== PSK_BYTES) {
    throw new ValidationError(
      'E_PSK_INVALID',
      `mesh pre-shared key must be ${PSK_BYTES} bytes, got ${psk.byteLength}`,
      {
        hint: 'Use the key from a join token created by `meshd init`; do not edit it by hand.',
      },
    );
  }
  return new TextEncoder().encode(header + Buffer.from(psk).toString('hex'));
}

/** Reads raw psk bytes back from a swarm key; refuses anything that is not exactly the v1 base16 format. */
export function pskFromSwarmKey(swarmKey: Uint8Array): Uint8Array {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(swarmKey).replace(/\r\n/g, '\n');
  const hex = text.startsWith(header) ? text.slice(header.length).trim() : '';
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new ValidationError(
      'E_PSK_INVALID',
      'swarm key is not in the /key/swarm/psk/1.0.0/ base16 format',
      {
        hint: 'A swarm key has three lines: /key/swarm/psk/1.0.0/, /base16/, and 64 hex digits.',
      },
    );
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}
