// Asking one peer a question over libp2p (`why`, `logs`): msgpack frames, length-prefixed, size-limited, streamed.
//
// Request: one frame `{v: 1, kind, pod, opts}`. Answer: any number of `{t: 'data', body}` frames, then
// `{t: 'end'}` or `{t: 'error', error: {code, message, hint}}`. A question has a deadline; a streamed
// answer (logs -f) runs until the asker aborts. Anything malformed is a PeerProtocolError naming the peer.

import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { Packr } from 'msgpackr';
import {
  type ErrorBody,
  errorFromBody,
  isMeshdError,
  MeshdError,
  PeerProtocolError,
} from '../shared/errors.ts';

export interface PeerQuestion {
  kind: string;
  pod: string;
  opts: Record<string, unknown>;
}

/** Answers a question by yielding bodies; throwing a MeshdError sends it to the asker. */
export type QuestionHandler = (
  question: PeerQuestion,
  peer: string,
  signal: AbortSignal,
) => AsyncIterable<unknown>;

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const questionKinds = new Set(['why', 'logs']);

export interface QueryLimits {
  maxFrameBytes: number;
}

/** The asking side: sends the question and yields each body of the answer. */
export async function* askPeer(
  stream: Stream,
  question: PeerQuestion,
  peer: string,
  limits: QueryLimits,
  signal: AbortSignal,
): AsyncGenerator<unknown> {
  const lp = lpStream(stream, { maxDataLength: limits.maxFrameBytes });
  try {
    await lp.write(packr.pack({ v: 1, ...question }), { signal });
    for (;;) {
      const frame = decodeFrame((await lp.read({ signal })).subarray(), peer);
      if (frame.t === 'end') break;
      if (frame.t === 'error') throw errorFromBody(frame.error);
      yield frame.body;
    }
    await stream.close({ signal }).catch(() => {});
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}

/** The answering side: reads one question, streams the handler's bodies, ends with `end` or `error`. */
export async function answerPeer(
  stream: Stream,
  handler: QuestionHandler,
  peer: string,
  limits: QueryLimits,
  signal: AbortSignal,
): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: limits.maxFrameBytes });
  const write = (frame: object) => {
    const bytes = packr.pack(frame);
    if (bytes.byteLength > limits.maxFrameBytes) {
      throw new MeshdError(
        'E_ANSWER_TOO_LARGE',
        `answer frame of ${bytes.byteLength} bytes is over the limit`,
      );
    }
    return lp.write(bytes, { signal });
  };
  try {
    const question = decodeQuestion((await lp.read({ signal })).subarray(), peer);
    try {
      for await (const body of handler(question, peer, signal)) await write({ t: 'data', body });
      await write({ t: 'end' });
    } catch (err) {
      const error: ErrorBody = isMeshdError(err)
        ? err.toJSON()
        : {
            code: 'E_INTERNAL',
            message: `the peer failed to answer: ${err instanceof Error ? err.message : String(err)}`,
          };
      await write({ t: 'error', error });
    }
    await stream.close({ signal }).catch(() => {});
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}

type Frame = { t: 'data'; body: unknown } | { t: 'end' } | { t: 'error'; error: ErrorBody };

function decodeFrame(bytes: Uint8Array, peer: string): Frame {
  const raw = unpack(bytes, peer) as Partial<{ t: unknown; body: unknown; error: unknown }> | null;
  if (raw?.t === 'data') return { t: 'data', body: raw.body };
  if (raw?.t === 'end') return { t: 'end' };
  const e = raw?.error as Partial<ErrorBody> | undefined;
  if (raw?.t === 'error' && typeof e?.code === 'string' && typeof e.message === 'string') {
    return {
      t: 'error',
      error: {
        code: e.code,
        message: `${e.message} (answered by peer ${peer})`,
        ...(typeof e.hint === 'string' ? { hint: e.hint } : {}),
      },
    };
  }
  throw malformed(peer, 'an answer frame that is not data, end or error');
}

function decodeQuestion(bytes: Uint8Array, peer: string): PeerQuestion {
  const raw = unpack(bytes, peer) as Partial<{
    v: unknown;
    kind: unknown;
    pod: unknown;
    opts: unknown;
  }> | null;
  if (
    raw?.v !== 1 ||
    typeof raw.kind !== 'string' ||
    !questionKinds.has(raw.kind) ||
    typeof raw.pod !== 'string'
  ) {
    throw malformed(peer, 'a question that is not {v: 1, kind: why|logs, pod}');
  }
  const opts = typeof raw.opts === 'object' && raw.opts !== null && !Array.isArray(raw.opts) ? raw.opts : {};
  return { kind: raw.kind, pod: raw.pod, opts: opts as Record<string, unknown> };
}

function unpack(bytes: Uint8Array, peer: string): unknown {
  try {
    return packr.unpack(bytes);
  } catch {
    throw malformed(peer, 'bytes that are not msgpack');
  }
}

function malformed(peer: string, what: string): PeerProtocolError {
  return new PeerProtocolError('E_PEER_BAD_QUERY', `peer ${peer} sent ${what}`, {
    hint: 'The peer runs an incompatible or broken meshd; upgrade it.',
    details: { peer },
  });
}
