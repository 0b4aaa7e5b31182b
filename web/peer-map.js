// The peer map: every node as a shape in an SVG graph (state by colour, shape and word), links with RTT, the pods on each node.

import { api } from './api.js';
import { ago, h, replaceKeepingFocus, svg } from './element.js';

/** Colour, shape and word per node state: colour is never the only signal. */
const looks = {
  ready: { shape: 'circle', glyph: '✓', word: 'ready', colour: '#2e7d32' },
  unreachable: { shape: 'diamond', glyph: '✗', word: 'unreachable', colour: '#c62828' },
  removed: { shape: 'square', glyph: '–', word: 'removed', colour: '#616161' },
};
const lookOf = (state) => looks[state] ?? { shape: 'circle', glyph: '?', word: state, colour: '#616161' };

function buildModel(nodes, peers, pods) {
  const byPeer = new Map(peers.map((p) => [p.peerId, p]));
  const self = nodes.find((n) => n.self);
  const ordered = [...nodes].sort((a, b) => (a.self ? -1 : b.self ? 1 : a.name.localeCompare(b.name)));
  const model = {
    self: self?.name ?? null,
    nodes: ordered.map((n) => {
      const p = byPeer.get(n.peerId);
      return {
        name: n.name,
        // A node declared dead (`meshd node forget`) is shown as removed, whatever its last state.
        state: n.forgotten === true ? 'removed' : n.state,
        tags: [n.cordoned === true ? 'cordoned' : null, n.draining === true ? 'draining' : null].filter(
          Boolean,
        ),
        self: n.self,
        connected: n.self || p?.connected === true,
        rtt: p?.rttMs === null || p?.rttMs === undefined ? null : Math.round(p.rttMs * 10) / 10,
        lastSeen:
          n.state === 'ready' || p === undefined ? null : Math.round((p.lastSeenMs ?? 0) / 1000) * 1000,
        pods: pods
          .filter((e) => e.node === n.name)
          .map((e) => ({ name: e.name, slot: e.slot, replicas: e.replicas, phase: e.phase })),
      };
    }),
    unplaced: pods
      .filter((e) => e.node === null)
      .map((e) => ({ name: e.name, slot: e.slot, phase: e.phase })),
  };
  // Future daemons may report links between other peers too; draw them when present.
  model.links = ordered
    .filter((n) => !n.self)
    .flatMap((n) => {
      const p = byPeer.get(n.peerId);
      if (self === undefined || p?.connected !== true) return [];
      return [{ from: self.name, to: n.name, rtt: p.rttMs === null ? null : Math.round(p.rttMs * 10) / 10 }];
    });
  const names = new Map(nodes.map((n) => [n.peerId, n.name]));
  for (const p of peers) {
    for (const l of Array.isArray(p.links) ? p.links : []) {
      const from = names.get(p.peerId);
      const to = names.get(l.peerId);
      if (from === undefined || to === undefined || from === model.self || to === model.self || from > to)
        continue;
      model.links.push({ from, to, rtt: typeof l.rttMs === 'number' ? Math.round(l.rttMs * 10) / 10 : null });
    }
  }
  return model;
}

const podLine = (p) => `${p.name}/${p.slot} ${p.phase}`;
const rttText = (rtt) => (rtt === null ? 'rtt ?' : `${rtt} ms`);

function shapeOf(look, x, y) {
  const common = { fill: look.colour, stroke: '#1b1b1b', 'stroke-width': 1.5 };
  if (look.shape === 'diamond') {
    return svg('polygon', {
      points: `${x},${y - 30} ${x + 30},${y} ${x},${y + 30} ${x - 30},${y}`,
      ...common,
      fill: '#ffebee',
      stroke: look.colour,
      'stroke-width': 3,
      'stroke-dasharray': '6 4',
    });
  }
  if (look.shape === 'square') return svg('rect', { x: x - 24, y: y - 24, width: 48, height: 48, ...common });
  return svg('circle', { cx: x, cy: y, r: 26, ...common });
}

/** `large`: a narrow screen shrinks the drawing, so its labels are drawn larger (and spaced to match). */
function drawMap(model, large) {
  const line = large ? 34 : 24;
  const n = model.nodes.length;
  const radius = n <= 1 ? 0 : Math.max(large ? 230 : 180, n * (large ? 50 : 40));
  const maxPods = Math.max(0, ...model.nodes.map((x) => Math.min(x.pods.length, 4)));
  const pos = new Map(
    model.nodes.map((node, i) => {
      const angle = -Math.PI / 2 + (i * 2 * Math.PI) / Math.max(1, n);
      return [
        node.name,
        { x: Math.round(radius * Math.cos(angle)), y: Math.round(radius * Math.sin(angle)) },
      ];
    }),
  );
  const pad = { x: large ? 150 : 140, top: 50, bottom: 40 + 3 * line + maxPods * line };
  const view = [-radius - pad.x, -radius - pad.top, 2 * (radius + pad.x), 2 * radius + pad.top + pad.bottom];
  const summary = model.nodes
    .map((x) => `${x.name}: ${lookOf(x.state).word}${x.self ? ' (this node)' : ''}, ${x.pods.length} pod(s)`)
    .join('; ');
  return svg(
    'svg',
    {
      viewBox: view.join(' '),
      role: 'img',
      'aria-label': `Peer map of ${n} node(s). ${summary}`,
      class: large ? 'map large' : 'map',
    },
    model.links.map((l) => {
      const a = pos.get(l.from);
      const b = pos.get(l.to);
      if (a === undefined || b === undefined) return null;
      // Labels hang below each node: put the RTT past the middle, away from the first node's labels.
      const mx = a.x + (b.x - a.x) * 0.65;
      const my = a.y + (b.y - a.y) * 0.65;
      return svg(
        'g',
        { class: 'link', dataset: { from: l.from, to: l.to } },
        svg('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: '#546e7a', 'stroke-width': 2.5 }),
        svg('text', { x: mx, y: my - 6, 'text-anchor': 'middle', class: 'halo' }, rttText(l.rtt)),
      );
    }),
    model.nodes.map((node) => {
      const { x, y } = pos.get(node.name);
      const look = lookOf(node.state);
      const lines = node.pods.slice(0, 4).map(podLine);
      if (node.pods.length > 4) lines.push(`+${node.pods.length - 4} more`);
      return svg(
        'g',
        { class: `node state-${node.state}`, dataset: { node: node.name, state: node.state } },
        node.self
          ? svg('circle', { cx: x, cy: y, r: 36, fill: 'none', stroke: '#1565c0', 'stroke-width': 3 })
          : null,
        shapeOf(look, x, y),
        svg(
          'text',
          {
            x,
            y: y + 7,
            'text-anchor': 'middle',
            class: 'glyph',
            fill: node.state === 'ready' ? '#fff' : look.colour,
          },
          look.glyph,
        ),
        svg('text', { x, y: y + 34 + line, 'text-anchor': 'middle', class: 'name halo' }, node.name),
        svg(
          'text',
          { x, y: y + 34 + 2 * line, 'text-anchor': 'middle', class: 'state halo', fill: look.colour },
          [look.word, ...node.tags, node.self ? 'this node' : null].filter(Boolean).join(' · '),
        ),
        lines.map((text, i) =>
          svg('text', { x, y: y + 34 + (3 + i) * line, 'text-anchor': 'middle', class: 'pod halo' }, text),
        ),
      );
    }),
  );
}

function legend() {
  const item = (state) => {
    const look = lookOf(state);
    return h(
      'li',
      {},
      svg(
        'svg',
        { viewBox: '-34 -34 68 68', width: 22, height: 22, 'aria-hidden': 'true' },
        shapeOf(look, 0, 0),
      ),
      ` ${look.glyph} ${look.word}`,
    );
  };
  return h(
    'ul',
    { class: 'legend', 'aria-label': 'Legend' },
    item('ready'),
    item('unreachable'),
    item('removed'),
  );
}

function nodesTable(model) {
  const rows = model.nodes.map((node) => {
    const look = lookOf(node.state);
    return h(
      'tr',
      { dataset: { node: node.name, state: node.state } },
      h('th', { scope: 'row' }, node.name, node.self ? ' (this node)' : ''),
      h('td', { class: `state-${node.state}` }, [`${look.glyph} ${look.word}`, ...node.tags].join(', ')),
      h(
        'td',
        {},
        node.self
          ? '—'
          : node.connected
            ? `connected, ${rttText(node.rtt)}`
            : `not connected${node.lastSeen === null ? '' : `, last seen ${ago(node.lastSeen)}`}`,
      ),
      h(
        'td',
        {},
        node.pods.length === 0
          ? 'no pods'
          : h(
              'ul',
              { class: 'inline' },
              node.pods.map((p) =>
                h(
                  'li',
                  {},
                  h(
                    'a',
                    {
                      href: `#/pods/${encodeURIComponent(p.name)}`,
                      dataset: { focusKey: `map-${node.name}-${p.name}-${p.slot}` },
                    },
                    `${p.name}/${p.slot}`,
                  ),
                  ` ${p.phase}`,
                ),
              ),
            ),
      ),
    );
  });
  return [
    h(
      'table',
      {},
      h('caption', {}, `${model.nodes.length} node(s), as seen from ${model.self ?? 'this node'}`),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Node', 'State', 'Link from this node', 'Pods'].map((t) => h('th', { scope: 'col' }, t)),
        ),
      ),
      h('tbody', {}, rows),
    ),
    model.unplaced.length === 0
      ? null
      : h('p', {}, `Not placed on any node yet: ${model.unplaced.map(podLine).join(', ')}`),
  ];
}

export function peerMapView() {
  const mapBox = h('div', { class: 'map-box' });
  const tableBox = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Nodes' });
  const element = h(
    'section',
    { 'aria-labelledby': 'view-title' },
    h('h2', { id: 'view-title', tabindex: '-1' }, 'Peer map'),
    mapBox,
    legend(),
    h('h3', {}, 'Nodes'),
    tableBox,
  );
  let lastKey = '';
  const narrow = matchMedia('(max-width: 600px)');
  const view = {
    title: 'Peer map',
    element,
    async refresh() {
      const [nodes, peers, pods] = await Promise.all([api.nodes(), api.peers(), api.pods()]);
      const model = buildModel(nodes, peers, pods);
      const large = narrow.matches;
      const key = JSON.stringify([model, large]);
      if (key === lastKey) return;
      lastKey = key;
      replaceKeepingFocus(mapBox, drawMap(model, large));
      replaceKeepingFocus(tableBox, nodesTable(model));
    },
    dispose() {
      narrow.removeEventListener('change', redraw);
    },
  };
  // Turning a phone, or resizing a window past 600 px, redraws with the other label size.
  const redraw = () => void view.refresh().catch(() => {});
  narrow.addEventListener('change', redraw);
  return view;
}
