// Slot keys: replica i of pod NAME is the slot `pod/NAME#i`, the unit a lease is claimed for.

import type { PodInfo } from './cluster-view.ts';

export interface SlotRef {
  readonly pod: string;
  readonly index: number;
}

export function slotKey(pod: string, index: number): string {
  return `pod/${pod}#${index}`;
}

/** The pod name and replica index of a slot key, or undefined when it is not a slot key. */
export function parseSlot(slot: string): SlotRef | undefined {
  const hash = slot.lastIndexOf('#');
  if (!slot.startsWith('pod/') || hash <= 4) return undefined;
  const digits = slot.slice(hash + 1);
  if (!/^(0|[1-9][0-9]*)$/.test(digits)) return undefined;
  const index = Number(digits);
  if (!Number.isSafeInteger(index)) return undefined;
  return { pod: slot.slice(4, hash), index };
}

/** A pod's replica count as a usable integer (a malformed count schedules nothing). */
export function replicaCount(pod: PodInfo): number {
  return Number.isSafeInteger(pod.replicas) && pod.replicas > 0 ? pod.replicas : 0;
}

/** `pod/NAME#0` … `pod/NAME#(replicas-1)`. */
export function slotsOf(pod: PodInfo): string[] {
  return Array.from({ length: replicaCount(pod) }, (_, i) => slotKey(pod.name, i));
}

/** Code-point string order: identical on every peer whatever its locale. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
