// A size-bounded log file: `name`, `name.1` … `name.<keep-1>`; no file ever exceeds maxBytes.

import { closeSync, fstatSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';

export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;
export const DEFAULT_LOG_KEEP = 3;

export interface RotationPolicy {
  maxBytes: number;
  /** Files kept in total, the live one included (3 = name, name.1, name.2). */
  keep: number;
}

/** The files of a rotated log, oldest first (some may not exist). */
export function rotatedFiles(path: string, keep: number): string[] {
  const out: string[] = [];
  for (let i = keep - 1; i >= 1; i--) out.push(`${path}.${i}`);
  out.push(path);
  return out;
}

/** Synchronous on purpose: the supervisor writes from pipe callbacks and must keep order. */
export class RotatingLog {
  private fd: number;
  private size: number;
  private readonly path: string;
  private readonly policy: RotationPolicy;

  constructor(path: string, policy: RotationPolicy) {
    if (!(policy.maxBytes > 0) || !(policy.keep >= 1))
      throw new Error('log rotation needs maxBytes > 0 and keep >= 1');
    this.path = path;
    this.policy = policy;
    this.fd = openSync(path, 'a', 0o640);
    this.size = fstatSync(this.fd).size;
  }

  write(chunk: Uint8Array): void {
    let rest = chunk;
    while (rest.byteLength > 0) {
      const room = this.policy.maxBytes - this.size;
      if (room <= 0) {
        this.rotate();
        continue;
      }
      const part = rest.byteLength <= room ? rest : rest.subarray(0, room);
      let off = 0;
      while (off < part.byteLength) off += writeSync(this.fd, part, off);
      this.size += part.byteLength;
      rest = rest.subarray(part.byteLength);
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    closeSync(this.fd);
    const files = rotatedFiles(this.path, this.policy.keep);
    // files[0] is the oldest kept: it falls off; every other one moves one step older.
    if (this.policy.keep === 1) {
      unlinkSync(this.path);
    } else {
      try {
        unlinkSync(files[0] as string);
      } catch {}
      for (let i = 1; i < files.length; i++) {
        try {
          renameSync(files[i] as string, files[i - 1] as string);
        } catch {}
      }
    }
    this.fd = openSync(this.path, 'a', 0o640);
    this.size = 0;
  }
}
