// The private-network layer: every byte of a connection XSalsa20-encrypted with the mesh key, before Noise.
//
// The wire format is libp2p's pnet v1: each end sends a random 24-byte nonce, then writes its bytes XORed
// with XSalsa20(key, own nonce) and reads the other's with XSalsa20(key, their nonce). meshd carries its
// own implementation instead of @libp2p/pnet because that one builds on a WebAssembly cipher whose
// instances are never freed: a stranger without the key could open a few thousand connections and the
// daemon died when the WebAssembly memory could not grow (found by test/fuzz-protocols.e2e.test.ts).
// Here the keystream comes from @noble/ciphers, plain JavaScript, collected like any other object.

import type { AbortOptions, Logger, MultiaddrConnection } from '@libp2p/interface';
import { AbstractMultiaddrConnection } from '@libp2p/utils';
import { hsalsa, salsa20 } from '@noble/ciphers/salsa.js';

export const NONCE_BYTES = 24;
/** What the base class hands `sendData` (its own Uint8ArrayList type, whichever copy of the package). */
type SendArg = Parameters<AbstractMultiaddrConnection['sendData']>[0];
const BLOCK = 64;

/** An XSalsa20 keystream applied to a byte stream in chunks of any size: `update` XORs the next bytes. */
export class XSalsa20Stream {
  /** XSalsa20 is Salsa20 under a subkey derived once from the key and the nonce's first 16 bytes. */
  private readonly subkey: Uint8Array;
  private readonly nonceTail: Uint8Array;
  /** Bytes of keystream used so far. */
  private offset = 0;

  constructor(key: Uint8Array, nonce: Uint8Array) {
    if (key.byteLength !== 32) throw new Error('XSalsa20 key must be 32 bytes');
    if (nonce.byteLength !== NONCE_BYTES) throw new Error(`XSalsa20 nonce must be ${NONCE_BYTES} bytes`);
    const words = new Uint32Array(8);
    hsalsa(words32(sigma), words32(Uint8Array.from(key)), words32(nonce.slice(0, 16)), words);
    this.subkey = new Uint8Array(words.buffer);
    this.nonceTail = nonce.slice(16);
  }

  update(data: Uint8Array): Uint8Array {
    if (data.byteLength === 0) return new Uint8Array(0);
    // The cipher works in 64-byte blocks from a block counter: start at the block holding `offset` and
    // pad the front so the data lines up with its place in the keystream.
    const skip = this.offset % BLOCK;
    const block = Math.floor(this.offset / BLOCK);
    this.offset += data.byteLength;
    if (skip === 0) return salsa20(this.subkey, this.nonceTail, data, undefined, block);
    const padded = new Uint8Array(skip + data.byteLength);
    padded.set(data, skip);
    return salsa20(this.subkey, this.nonceTail, padded, padded, block).subarray(skip);
  }
}

const sigma = new TextEncoder().encode('expand 32-byte k');

/** Little-endian 32-bit words of `bytes` (a fresh, aligned copy). */
function words32(bytes: Uint8Array): Uint32Array {
  const copy = Uint8Array.from(bytes);
  const out = new Uint32Array(copy.byteLength / 4);
  const view = new DataView(copy.buffer);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

export interface PrivateStreamInit {
  /** The raw connection, right after the nonce exchange. */
  maConn: MultiaddrConnection;
  psk: Uint8Array;
  localNonce: Uint8Array;
  remoteNonce: Uint8Array;
  log: Logger;
}

/** The raw connection seen through the mesh key: what Noise runs on. */
export class PrivateStream extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection;
  private readonly inbound: XSalsa20Stream;
  private readonly outbound: XSalsa20Stream;

  constructor(init: PrivateStreamInit) {
    super({
      log: init.log,
      remoteAddr: init.maConn.remoteAddr,
      direction: init.maConn.direction,
    });
    this.maConn = init.maConn;
    this.inbound = new XSalsa20Stream(init.psk, init.remoteNonce);
    this.outbound = new XSalsa20Stream(init.psk, init.localNonce);
    this.maConn.addEventListener('message', (evt) => {
      const data = evt.data;
      if (data instanceof Uint8Array) this.onData(this.inbound.update(data));
      else for (const chunk of data) this.onData(this.inbound.update(chunk));
    });
    // resume sending when the raw connection can take more
    this.maConn.addEventListener('drain', () => this.onMuxerDrain());
    this.maConn.addEventListener('close', (evt) => {
      if (evt.error === undefined) this.onTransportClosed();
      else if (evt.local) this.abort(evt.error);
      else this.onRemoteReset();
    });
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    await this.maConn.close(options);
  }

  sendData(data: SendArg): ReturnType<AbstractMultiaddrConnection['sendData']> {
    return {
      sentBytes: data.byteLength,
      canSendMore: this.maConn.send(this.outbound.update(data.subarray())),
    };
  }

  sendReset(err: Error): void {
    this.maConn.abort(err);
  }

  sendPause(): void {
    this.maConn.pause();
  }

  sendResume(): void {
    this.maConn.resume();
  }
}
