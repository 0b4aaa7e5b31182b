// The state-vector sync run over one libp2p stream: y-protocols step 1/2 frames, length-prefixed, size-limited.

import { type Stream, StreamBufferError } from '@libp2p/interface';
import {
  InvalidDataLengthError,
  InvalidDataLengthLengthError,
  InvalidMessageLengthError,
  lpStream,
} from '@libp2p/utils';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { messageYjsSyncStep1, messageYjsSyncStep2 } from 'y-protocols/sync';
import { describeError, MeshdError, PeerProtocolError } from '../shared/errors.ts';
import { checkStateVector } from './doc-update.ts';

export type SyncFrame = { kind: 'step1'; stateVector: Uint8Array } | { kind: 'step2'; update: Uint8Array };

/** What a sync run needs from the document; `apply` throws `PeerProtocolError` for garbage. */
export interface SyncParty {
  stateVector(): Uint8Array;
  /** The update holding everything the remote (with state vector `remoteSv`) lacks. */
  missingFor(remoteSv: Uint8Array): Uint8Array;
  apply(update: Uint8Array): void;
}

export interface SyncRunOptions {
  /** Largest frame accepted or sent (bytes). */
  maxFrameBytes: number;
  signal: AbortSignal;
  /** Remote peer id, for errors and logs. */
  peer: string;
  /** Frame bytes written and read are added here as they happen, so a failed run is counted too. */
  counts: SyncByteCounts;
}

export interface SyncByteCounts {
  bytesSent: number;
  bytesReceived: number;
}

/** Room for a state vector (about 10 bytes per client that ever wrote) next to a full step 2 frame. */
const stepOneAllowance = 1024 * 1024;

const badFrameHint = 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.';

/** Encodes one frame exactly as y-protocols does: varuint message type, then a varuint-length payload. */
export function encodeSyncFrame(frame: SyncFrame): Uint8Array {
  const encoder = encoding.createEncoder();
  if (frame.kind === 'step1') {
    encoding.writeVarUint(encoder, messageYjsSyncStep1);
    encoding.writeVarUint8Array(encoder, frame.stateVector);
  } else {
    encoding.writeVarUint(encoder, messageYjsSyncStep2);
    encoding.writeVarUint8Array(encoder, frame.update);
  }
  return encoding.toUint8Array(encoder);
}

/** Decodes one frame; anything but a single well-formed step 1 or step 2 is a `PeerProtocolError`. */
export function decodeSyncFrame(bytes: Uint8Array, peer: string): SyncFrame {
  let type: number;
  let payload: Uint8Array;
  try {
    const decoder = decoding.createDecoder(bytes);
    type = decoding.readVarUint(decoder);
    payload = decoding.readVarUint8Array(decoder);
    if (decoding.hasContent(decoder)) throw new Error('trailing bytes after the payload');
  } catch (err) {
    throw new PeerProtocolError(
      'E_PEER_BAD_FRAME',
      `peer ${peer} sent a malformed sync frame (${describeError(err)})`,
      {
        hint: badFrameHint,
        details: { peer, bytes: bytes.byteLength },
      },
    );
  }
  if (type === messageYjsSyncStep1) {
    checkStateVector(payload, peer);
    return { kind: 'step1', stateVector: payload };
  }
  if (type === messageYjsSyncStep2) return { kind: 'step2', update: payload };
  throw new PeerProtocolError(
    'E_PEER_BAD_FRAME',
    `peer ${peer} sent sync frame type ${type}; expected 0 or 1`,
    {
      hint: badFrameHint,
      details: { peer, type },
    },
  );
}

/**
 * Runs one sync over `stream`. Both ends run this same function: each writes step 1, reads the other's
 * step 1, answers with step 2, then reads and applies the other's step 2. Writes never wait on reads, so the
 * two ends cannot deadlock, and one run brings both documents up to date. The stream is closed on success
 * and aborted on any failure; `PeerProtocolError` marks a misbehaving peer, other errors a broken transport.
 */
export async function runDocSync(stream: Stream, party: SyncParty, opts: SyncRunOptions): Promise<void> {
  const { peer, signal, counts } = opts;
  // the read buffer may hold the peer's step 1 (a state vector) and its whole step 2 at once; beyond that
  // lpStream aborts the stream with StreamBufferError, which is reported like an oversized frame
  const lp = lpStream(stream, {
    maxDataLength: opts.maxFrameBytes,
    maxBufferSize: opts.maxFrameBytes + stepOneAllowance,
  });
  const send = async (frame: SyncFrame): Promise<void> => {
    const bytes = encodeSyncFrame(frame);
    if (bytes.byteLength > opts.maxFrameBytes) {
      throw new MeshdError(
        'E_SYNC_TOO_LARGE',
        `sync frame for peer ${peer} is ${bytes.byteLength} bytes, over the ${opts.maxFrameBytes}-byte limit`,
        {
          hint: 'Raise tuning.maxSyncBytes on every peer, or compact the cluster document.',
          details: { peer, bytes: bytes.byteLength, limit: opts.maxFrameBytes },
        },
      );
    }
    await lp.write(bytes, { signal });
    counts.bytesSent += bytes.byteLength;
  };
  const receive = async (): Promise<SyncFrame> => {
    let bytes: Uint8Array;
    try {
      bytes = (await lp.read({ signal })).subarray();
    } catch (err) {
      if (
        err instanceof InvalidDataLengthError ||
        err instanceof InvalidDataLengthLengthError ||
        err instanceof InvalidMessageLengthError ||
        err instanceof StreamBufferError
      ) {
        throw new PeerProtocolError(
          'E_PEER_FRAME_TOO_LARGE',
          `peer ${peer} sent an oversized or malformed sync frame length (${err.message})`,
          {
            hint: 'Raise tuning.maxSyncBytes on every peer if the document really is this large.',
            details: { peer, limit: opts.maxFrameBytes },
          },
        );
      }
      throw err;
    }
    counts.bytesReceived += bytes.byteLength;
    return decodeSyncFrame(bytes, peer);
  };
  const outOfOrder = (got: SyncFrame['kind'], due: SyncFrame['kind']): PeerProtocolError =>
    new PeerProtocolError('E_PEER_BAD_FRAME', `peer ${peer} sent sync ${got} where ${due} was due`, {
      hint: badFrameHint,
      details: { peer },
    });
  try {
    await send({ kind: 'step1', stateVector: party.stateVector() });
    const step1 = await receive();
    if (step1.kind !== 'step1') throw outOfOrder(step1.kind, 'step1');
    await send({ kind: 'step2', update: party.missingFor(step1.stateVector) });
    const step2 = await receive();
    if (step2.kind !== 'step2') throw outOfOrder(step2.kind, 'step2');
    party.apply(step2.update);
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}
