// Reproducible garbage for fuzz tests: a seeded PRNG, unsigned-varint length prefixes, and byte mutations.

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
export class SeededRandom {
  readonly seed: number;
  private state: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.state = this.seed;
  }

  /** A uniform uint32. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let x = this.state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  }

  /** An integer in [0, maxExclusive). */
  int(maxExclusive: number): number {
    return maxExclusive <= 0 ? 0 : Math.floor((this.next() / 0x1_0000_0000) * maxExclusive);
  }

  bool(p = 0.5): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }

  pick<T>(list: readonly T[]): T {
    const item = list[this.int(list.length)];
    if (item === undefined) throw new Error('SeededRandom.pick: empty list');
    return item;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

/** `n` as an unsigned LEB128 varint (the length prefix of libp2p's lpStream), for any safe integer. */
export function varint(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`varint: ${n} is not a safe non-negative integer`);
  const out: number[] = [];
  let rest = n;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
  return Uint8Array.from(out);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** One length-prefixed frame, as lpStream writes it. */
export function lengthPrefixed(body: Uint8Array): Uint8Array {
  return concatBytes([varint(body.byteLength), body]);
}

/** A copy of `bytes` with `flips` random bytes replaced, and sometimes a random cut or insertion. */
export function mutate(rng: SeededRandom, bytes: Uint8Array, flips: number): Uint8Array {
  let out: Uint8Array = new Uint8Array(bytes);
  if (out.byteLength === 0) return rng.bytes(1 + rng.int(8));
  for (let i = 0; i < flips; i++) out[rng.int(out.byteLength)] = rng.int(256);
  if (rng.bool(0.2)) out = out.subarray(0, rng.int(out.byteLength));
  if (rng.bool(0.2)) {
    const at = rng.int(out.byteLength + 1);
    out = concatBytes([out.subarray(0, at), rng.bytes(1 + rng.int(16)), out.subarray(at)]);
  }
  return out;
}
