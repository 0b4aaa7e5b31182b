// Stored objects for state tests: the web pod as the document holds it, the context that folds its signed
// records, a path lookup into a stored object, and a seeded [0, 1) stream to shuffle deliveries with.

import { FieldOwnership } from '../../src/state/field-ownership.ts';
import type { MaterializeContext } from '../../src/state/materialize.ts';
import type { JsonObject, JsonValue } from '../../src/state/merge-patch.ts';
import { storedPodProblem } from '../../src/state/pod-spec.ts';
import { createEntryChecker, peerIdVerifier } from '../../src/state/revision-records.ts';
import { SeededRandom } from './fuzz-bytes.ts';

/** Pod `web` as stored: one container `app` running `serve`, with `spec` merged over the defaults. */
export function storedWebPod(spec: Partial<JsonObject> = {}): JsonObject {
  return {
    kind: 'Pod',
    name: 'web',
    spec: {
      containers: { app: { command: ['serve'], order: 0 } },
      restartPolicy: 'always',
      availability: 'best-effort',
      replicas: 1,
      ...spec,
    },
  };
}

/** What materialize needs to fold pod records: signature checks by peer id, the built-in field owners. */
export function podMaterializeContext(
  rules: FieldOwnership = FieldOwnership.withBuiltins(),
): MaterializeContext {
  return { check: createEntryChecker(peerIdVerifier()), rules, validate: storedPodProblem };
}

/** The value at `path` inside `obj`, or undefined. */
export function valueAt(obj: JsonValue | undefined, ...path: string[]): JsonValue | undefined {
  let v = obj;
  for (const k of path) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? v[k] : undefined;
  return v;
}

/** A reproducible stream of numbers in [0, 1) (mulberry32) for the same seed. */
export function seededUnitRandom(seed: number): () => number {
  const rng = new SeededRandom(seed);
  return () => rng.next() / 0x1_0000_0000;
}
