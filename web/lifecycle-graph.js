// A pod's lifecycle graph from `meshd why` (steps in dependency columns, state by marker, word and colour).

import { h, svg } from './element.js';

const fills = {
  waiting: '#eeeeee',
  running: '#bbdefb',
  done: '#c8e6c9',
  failed: '#ef9a9a',
  'timed-out': '#ffcc80',
  'dependency-failed': '#f8bbd0',
  skipped: '#e0e0e0',
  stopping: '#fff59d',
  stopped: '#cfd8dc',
};

/** Column of each step: one more than the deepest step it starts after (cycles are cut). */
function columns(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const depth = new Map();
  const visit = (name, seen) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const deps = (byName.get(name)?.after ?? []).filter((d) => byName.has(d));
    const d = deps.length === 0 ? 0 : 1 + Math.max(...deps.map((x) => visit(x, seen)));
    depth.set(name, d);
    return d;
  };
  for (const s of steps) visit(s.name, new Set());
  return depth;
}

/** `markers`: the daemon's marker per step state (the same `meshd why` prints). */
function graph(snapshot, markers) {
  const steps = Array.isArray(snapshot.steps) ? snapshot.steps : [];
  if (steps.length === 0) return h('p', {}, 'No steps recorded.');
  const depth = columns(steps);
  const rows = new Map();
  const at = new Map();
  for (const s of steps) {
    const d = depth.get(s.name) ?? 0;
    const row = rows.get(d) ?? 0;
    rows.set(d, row + 1);
    at.set(s.name, { x: 10 + d * 200, y: 10 + row * 56 });
  }
  const width = 10 + (Math.max(...depth.values()) + 1) * 200;
  const height = 10 + Math.max(...rows.values()) * 56;
  const edges = steps.flatMap((s) =>
    (s.after ?? []).flatMap((dep) => {
      const a = at.get(dep);
      const b = at.get(s.name);
      if (a === undefined || b === undefined) return [];
      return [
        svg('line', {
          x1: a.x + 170,
          y1: a.y + 22,
          x2: b.x,
          y2: b.y + 22,
          stroke: '#546e7a',
          'stroke-width': 1.5,
          'marker-end': 'url(#arrow)',
        }),
      ];
    }),
  );
  return svg(
    'svg',
    {
      viewBox: `0 0 ${width} ${height}`,
      class: 'lifecycle',
      role: 'img',
      'aria-label': steps.map((s) => `${s.name}: ${s.state}`).join('; '),
    },
    svg(
      'defs',
      {},
      svg(
        'marker',
        {
          id: 'arrow',
          viewBox: '0 0 10 10',
          refX: 9,
          refY: 5,
          markerWidth: 6,
          markerHeight: 6,
          orient: 'auto',
        },
        svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#546e7a' }),
      ),
    ),
    edges,
    steps.map((s) => {
      const { x, y } = at.get(s.name);
      return svg(
        'g',
        { class: 'step', dataset: { step: s.name, state: s.state } },
        svg('rect', {
          x,
          y,
          width: 170,
          height: 44,
          rx: 6,
          fill: fills[s.state] ?? '#eeeeee',
          stroke: '#1b1b1b',
        }),
        svg('text', { x: x + 8, y: y + 18, class: 'step-name' }, `${markers[s.state] ?? '?'} ${s.name}`),
        svg(
          'text',
          { x: x + 8, y: y + 36, class: 'step-state' },
          `${s.state}${typeof s.durationMs === 'number' ? ` · ${Math.round(s.durationMs)} ms` : ''}`,
        ),
      );
    }),
  );
}

/**
 * Renders `meshd why` as the daemon answers it: the summary, then per slot its graph (from the raw
 * journal snapshot when there is one) and the same text the terminal prints.
 */
export function lifecycleView(view) {
  const slots = Array.isArray(view?.slots) ? view.slots : [];
  const raw = Array.isArray(view?.report?.slots) ? view.report.slots : [];
  return [
    view?.summary ? h('pre', { class: 'summary' }, view.summary) : null,
    view?.unreachable ? h('p', { class: 'note' }, `(${view.unreachable})`) : null,
    slots.length === 0 ? h('p', {}, `Node ${view?.node ?? '?'} has not run this pod.`) : null,
    slots.map((slot) => {
      const snapshot = raw.find((r) => r.slot === slot.slot)?.snapshot;
      return h(
        'figure',
        { class: 'scroll' },
        h('figcaption', {}, `Slot ${slot.slot} on ${view.node} (${slot.phase}): ${slot.summary}`),
        snapshot === undefined
          ? h('p', {}, 'No lifecycle run recorded yet.')
          : graph(snapshot, view?.markers ?? {}),
        snapshot?.blocker
          ? h(
              'p',
              {},
              `Held back by ${snapshot.blocker.step} (${snapshot.blocker.state})`,
              snapshot.blocker.error ? `: ${snapshot.blocker.error}` : '',
            )
          : null,
        slot.text ? h('details', {}, h('summary', {}, 'As text'), h('pre', {}, slot.text)) : null,
      );
    }),
  ];
}
