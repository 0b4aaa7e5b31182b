// Reading a container's rotated log as lines: the last N across rotations, then following new ones.

import { type FileHandle, open, stat } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import type { Clock } from '../../shared/clock.ts';
import { NotFoundError } from '../../shared/errors.ts';
import { DEFAULT_LOG_KEEP, rotatedFiles } from './rotating-log.ts';

export interface LogReaderOptions {
  tail?: number;
  follow?: boolean;
  signal?: AbortSignal;
  clock: Clock;
  keep?: number;
  pollMs?: number;
}

interface Segment {
  fh: FileHandle;
  size: number;
}

const CHUNK = 64 * 1024;

/** Splits bytes into lines, holding a partial last line (and partial UTF-8 characters) back. */
class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';

  push(buf: Uint8Array): string[] {
    const text = this.partial + this.decoder.write(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength));
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    return lines;
  }

  flush(): string[] {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    return rest === '' ? [] : [rest];
  }
}

/** Reads `len` bytes at virtual offset `start` of the segments laid end to end. */
async function readVirtual(segs: readonly Segment[], start: number, len: number): Promise<Buffer> {
  const out = Buffer.alloc(len);
  let off = start;
  let filled = 0;
  let base = 0;
  for (const s of segs) {
    const segStart = base;
    const segEnd = base + s.size;
    base = segEnd;
    if (off >= segEnd || filled >= len) continue;
    const n = Math.min(segEnd - off, len - filled);
    const { bytesRead } = await s.fh.read(out, filled, n, off - segStart);
    filled += bytesRead;
    off += bytesRead;
    if (bytesRead < n) break;
  }
  return out.subarray(0, filled);
}

/** Virtual offset where the last `n` lines begin (a line split by rotation counts once). */
async function tailStart(segs: readonly Segment[], n: number): Promise<number> {
  const total = segs.reduce((a, s) => a + s.size, 0);
  if (n <= 0) return total;
  let pos = total;
  let newlines = 0;
  while (pos > 0) {
    const start = Math.max(0, pos - CHUNK);
    const buf = await readVirtual(segs, start, pos - start);
    for (let i = buf.length - 1; i >= 0; i--) {
      // The final '\n' ends the last line; it does not start one.
      if (buf[i] !== 10 || start + i === total - 1) continue;
      newlines++;
      if (newlines === n) return start + i + 1;
    }
    pos = start;
  }
  return 0;
}

/** Yields the complete lines from `offset` to the end of `fh`; returns the new offset. */
async function* drain(
  fh: FileHandle,
  offset: number,
  buf: Buffer,
  splitter: LineSplitter,
): AsyncGenerator<string, number> {
  let off = offset;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, off);
    if (bytesRead === 0) return off;
    off += bytesRead;
    yield* splitter.push(buf.subarray(0, bytesRead));
  }
}

async function openIfExists(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function pause(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      timer.cancel();
      resolve();
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Lines (without '\n') of the log at `path` and its rotations, oldest first. */
export async function* readLogLines(path: string, opts: LogReaderOptions): AsyncGenerator<string> {
  const keep = opts.keep ?? DEFAULT_LOG_KEEP;
  const pollMs = opts.pollMs ?? 200;
  const segs: Segment[] = [];
  let current: FileHandle | undefined;
  try {
    // Open the live file first: a rotation after this moment is noticed by the follow loop.
    current = await openIfExists(path);
    if (current === undefined && !opts.follow) {
      throw new NotFoundError('E_LOG_NOT_FOUND', `no log at ${path}`, {
        hint: 'The container may never have started on this node; check `meshd why pod`.',
        details: { path },
      });
    }
    const older = rotatedFiles(path, keep).slice(0, -1);
    for (const file of older) {
      const fh = await openIfExists(file);
      if (fh !== undefined) segs.push({ fh, size: (await fh.stat()).size });
    }
    if (current !== undefined) segs.push({ fh: current, size: (await current.stat()).size });

    const total = segs.reduce((a, s) => a + s.size, 0);
    let pos = opts.tail === undefined ? 0 : await tailStart(segs, opts.tail);
    const splitter = new LineSplitter();
    while (pos < total) {
      const buf = await readVirtual(segs, pos, Math.min(CHUNK, total - pos));
      if (buf.length === 0) break;
      pos += buf.length;
      yield* splitter.push(buf);
    }
    if (!opts.follow) {
      yield* splitter.flush();
      return;
    }

    let offset = current === undefined ? 0 : (segs.at(-1)?.size ?? 0);
    const buf = Buffer.alloc(CHUNK);
    const files = rotatedFiles(path, keep);
    while (!opts.signal?.aborted) {
      if (current === undefined) {
        current = await openIfExists(path);
        offset = 0;
      }
      if (current !== undefined) {
        offset = yield* drain(current, offset, buf, splitter);
        // Where is our file now? Still the live name, or rotated (maybe more than once) to name.k.
        const mine = (await current.stat()).ino;
        const inos = await Promise.all(
          files.map((f) =>
            stat(f).then(
              (s) => s.ino,
              () => undefined,
            ),
          ),
        );
        const at = inos.indexOf(mine);
        if (at !== files.length - 1) {
          // Read every file newer than ours, oldest first; the live one becomes the one we follow.
          // A line cut by rotation continues in the next file, so the splitter keeps its partial line.
          // Our file may have grown between the drain above and its rename: finish it first.
          yield* drain(current, offset, buf, splitter);
          await current.close();
          current = undefined;
          for (const file of files.slice(at + 1, -1)) {
            const fh = await openIfExists(file);
            if (fh === undefined) continue;
            try {
              yield* drain(fh, 0, buf, splitter);
            } finally {
              await fh.close();
            }
          }
          continue;
        }
        if ((await current.stat()).size < offset) offset = 0; // truncated in place
      }
      await pause(opts.clock, pollMs, opts.signal);
    }
  } finally {
    for (const s of segs) await s.fh.close().catch(() => {});
    if (current !== undefined && !segs.some((s) => s.fh === current)) await current.close().catch(() => {});
  }
}
