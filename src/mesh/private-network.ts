// The private-network layer: every byte of a connection encrypted with the mesh key, before Noise.
//
// Each end sends a random nonce, then writes its bytes XORed with a ChaCha20 keystream (key: the mesh key,
// nonce: its own) and reads the other's with the other's nonce. The shape is libp2p's pnet v1; the cipher is
// not (pnet uses XSalsa20). meshd carries its own layer because @libp2p/pnet builds on a WebAssembly cipher
// whose instances are never freed: a stranger without the key could open a few thousand connections and the
// daemon died when the WebAssembly memory could not grow (found by test/fuzz-protocols.e2e.test.ts).
// ChaCha20 comes from node:crypto (OpenSSL): native, streaming, and freed with its connection.
// Confidentiality only, like pnet: integrity and peer authentication are Noise's job, inside.

import { type Cipheriv, createCipheriv } from 'node:crypto';
import type { AbortOptions, Logger, MultiaddrConnection } from '@libp2p/interface';
import { AbstractMultiaddrConnection } from '@libp2p/utils';

/** Random bytes each end sends; the first 12 are its ChaCha20 nonce (the rest keep the pnet v1 size). */
export const NONCE_BYTES = 24;
/** What the base class hands `sendData` (its own Uint8ArrayList type, whichever copy of the package). */
type SendArg = Parameters<AbstractMultiaddrConnection['sendData']>[0];

/** A ChaCha20 keystream over a byte stream in chunks of any size: `update` XORs the next bytes. */
export class KeyStream {
  private readonly cipher: Cipheriv;

  constructor(key: Uint8Array, nonce: Uint8Array) {
    if (key.byteLength !== 32) throw new Error('ChaCha20 key must be 32 bytes');
    if (nonce.byteLength !== NONCE_BYTES) throw new Error(`nonce must be ${NONCE_BYTES} bytes`);
    // OpenSSL's chacha20 IV: a 32-bit block counter (0) then the 96-bit nonce
    const iv = new Uint8Array(16);
    iv.set(nonce.subarray(0, 12), 4);
    this.cipher = createCipheriv('chacha20', key, iv);
  }

  update(data: Uint8Array): Uint8Array {
    return this.cipher.update(data);
  }
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
  private readonly inbound: KeyStream;
  private readonly outbound: KeyStream;

  constructor(init: PrivateStreamInit) {
    super({
      log: init.log,
      remoteAddr: init.maConn.remoteAddr,
      direction: init.maConn.direction,
    });
    this.maConn = init.maConn;
    this.inbound = new KeyStream(init.psk, init.remoteNonce);
    this.outbound = new KeyStream(init.psk, init.localNonce);
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
