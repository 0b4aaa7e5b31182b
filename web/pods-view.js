// Pods: the table of every slot, and one pod's page (spec, history, diff, rollback, lifecycle graph, logs).

import { api } from './api.js';
import { h, replaceKeepingFocus } from './element.js';
import { lifecycleView } from './lifecycle-graph.js';
import { lineDiff } from './line-diff.js';

const podLink = (name, key) =>
  h('a', { href: `#/pods/${encodeURIComponent(name)}`, dataset: { focusKey: key } }, name);

const revisionText = (e) =>
  e.runningRevision !== null && e.runningRevision !== e.revision
    ? `${e.revision} (runs ${e.runningRevision})`
    : e.revision;

export function podsListView() {
  const box = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Pod slots' });
  const element = h(
    'section',
    { 'aria-labelledby': 'view-title' },
    h('h2', { id: 'view-title', tabindex: '-1' }, 'Pods'),
    h('p', {}, h('a', { href: '#/edit' }, 'Create or edit a pod')),
    box,
  );
  let lastKey = '';
  return {
    title: 'Pods',
    /** Pods live in the document: peer notices (about once a second) change nothing here. */
    listensTo: ['doc'],
    element,
    async refresh() {
      const pods = await api.pods();
      const key = JSON.stringify(pods);
      if (key === lastKey) return;
      lastKey = key;
      if (pods.length === 0) {
        replaceKeepingFocus(box, h('p', {}, 'No pods yet.'));
        return;
      }
      replaceKeepingFocus(
        box,
        h(
          'table',
          { class: 'pods' },
          h('caption', {}, `${pods.length} pod slot(s)`),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Name', 'Slot', 'Phase', 'Node', 'Revision', 'Availability'].map((t) =>
                h('th', { scope: 'col' }, t),
              ),
            ),
          ),
          h(
            'tbody',
            {},
            pods.map((e) =>
              h(
                'tr',
                { dataset: { pod: e.name, slot: String(e.slot) } },
                h('th', { scope: 'row' }, podLink(e.name, `pods-${e.name}-${e.slot}`)),
                h('td', {}, `${e.slot + 1} of ${e.replicas}`),
                h('td', { class: `phase phase-${e.phase}` }, e.phase),
                h('td', {}, e.node ?? 'not placed'),
                h('td', {}, revisionText(e)),
                h('td', {}, e.availability),
              ),
            ),
          ),
        ),
      );
    },
  };
}

function historyTable(revs) {
  return h(
    'table',
    { class: 'history' },
    h('caption', {}, `${revs.length} revision(s), oldest first`),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Revision', 'Kind', 'Author', 'Node', 'When', 'Message'].map((t) => h('th', { scope: 'col' }, t)),
      ),
    ),
    h(
      'tbody',
      {},
      revs.map((r) =>
        h(
          'tr',
          { dataset: { revision: r.revision, kind: r.kind } },
          h(
            'th',
            { scope: 'row' },
            r.revision,
            r.concurrent ? ' (concurrent)' : '',
            r.rejected === undefined ? '' : ' REJECTED',
            r.compacted ? ' (compacted)' : '',
          ),
          h('td', {}, r.kind),
          h('td', { class: 'author' }, r.author.actor),
          h('td', {}, r.author.host),
          h('td', {}, h('time', { datetime: r.at }, r.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))),
          h('td', {}, r.rejected === undefined ? (r.message ?? '') : `rejected: ${r.rejected}`),
        ),
      ),
    ),
  );
}

/** Puts `options` in `select`, keeping the user's choice when it is still offered (else `fallback`). */
function setOptions(select, options, fallback) {
  const keep = select.dataset.touched === 'yes' ? select.value : undefined;
  select.replaceChildren(...options.map((o) => h('option', { value: o.value }, o.label)));
  const values = options.map((o) => o.value);
  select.value = keep !== undefined && values.includes(keep) ? keep : (fallback ?? values.at(-1) ?? '');
}

function diffView(d) {
  const lines = lineDiff(d.from.text, d.to.text);
  if (lines.every((l) => l.op === ' ')) {
    return h('p', {}, `Revisions ${d.from.revision} and ${d.to.revision} have the same spec.`);
  }
  return h(
    'pre',
    { class: 'diff', 'aria-label': `Changes from revision ${d.from.revision} to revision ${d.to.revision}` },
    h('span', { class: 'diff-head' }, `--- revision ${d.from.revision}\n+++ revision ${d.to.revision}\n`),
    lines.map((l) =>
      h(
        'span',
        { class: l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same' },
        // The +/- sign stays: the change is readable without colour.
        `${l.op}${l.text}\n`,
      ),
    ),
  );
}

function errorText(err) {
  return `${err.message}${err.hint ? ` — ${err.hint}` : ''}`;
}

export function podPageView(name, ctx) {
  const statusLine = h('p', { role: 'status', class: 'status-line' });
  const meta = h('p', {});
  const slotsBox = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Slots' });
  const specBox = h('pre', { class: 'spec', tabindex: '0', 'aria-label': 'Current spec' });
  const historyBox = h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'History' });
  const diffBox = h('div', { class: 'scroll', 'aria-live': 'polite' });
  const whyBox = h('div', {});
  const logsBox = h('div', {});

  const touch = (e) => {
    e.target.dataset.touched = 'yes';
  };
  const fromSel = h('select', { id: 'diff-from', onchange: touch });
  const toSel = h('select', { id: 'diff-to', onchange: touch });
  const targetSel = h('select', { id: 'rollback-to', onchange: touch });
  const message = h('input', { id: 'rollback-message', type: 'text', autocomplete: 'off' });
  const actor = ctx.actorInput('rollback-actor');
  const rollbackButton = h('button', { type: 'submit' }, 'Roll back');
  let revisions = [];

  const showDiff = async () => {
    if (fromSel.value === '' || toSel.value === '') return;
    try {
      replaceKeepingFocus(diffBox, diffView(await api.diff(name, fromSel.value, toSel.value)));
    } catch (err) {
      replaceKeepingFocus(diffBox, h('p', { class: 'error' }, errorText(err)));
    }
  };

  const diffForm = h(
    'form',
    {
      class: 'row',
      onsubmit: (e) => {
        e.preventDefault();
        void showDiff();
      },
    },
    h('label', { for: 'diff-from' }, 'From revision '),
    fromSel,
    h('label', { for: 'diff-to' }, ' to revision '),
    toSel,
    h('button', { type: 'submit' }, 'Show diff'),
  );

  const rollbackForm = h(
    'form',
    {
      class: 'stack',
      onsubmit: async (e) => {
        e.preventDefault();
        rollbackButton.disabled = true;
        statusLine.className = 'status-line';
        statusLine.textContent = `Rolling back to revision ${targetSel.value}…`;
        try {
          const res = await api.rollback(name, {
            to: targetSel.value,
            message: message.value,
            actor: actor.value,
          });
          statusLine.textContent = res.changed
            ? `Rolled back: revision ${res.revision} has the spec of revision ${targetSel.value}.`
            : `Nothing to do: the spec already equals revision ${targetSel.value}.`;
          message.value = '';
          await view.refresh();
        } catch (err) {
          statusLine.className = 'status-line error';
          statusLine.textContent = `Rollback refused: ${errorText(err)}`;
        } finally {
          rollbackButton.disabled = false;
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'rollback-to' }, 'Roll back to revision'), targetSel),
    h('div', { class: 'field' }, h('label', { for: 'rollback-message' }, 'Why (optional)'), message),
    h('div', { class: 'field' }, h('label', { for: 'rollback-actor' }, 'Recorded as'), actor),
    h('div', {}, rollbackButton),
  );

  const loadWhy = async () => {
    try {
      replaceKeepingFocus(whyBox, lifecycleView(await api.why(name)));
    } catch (err) {
      replaceKeepingFocus(whyBox, h('p', { class: 'muted' }, errorText(err)));
    }
  };
  const loadLogs = async () => {
    try {
      const { lines } = await api.logs(name, 100);
      replaceKeepingFocus(
        logsBox,
        lines.length === 0
          ? h('p', { class: 'muted' }, 'The log is empty.')
          : h('pre', { class: 'logs', tabindex: '0', 'aria-label': 'Last log lines' }, lines.join('\n')),
      );
    } catch (err) {
      replaceKeepingFocus(logsBox, h('p', { class: 'muted' }, errorText(err)));
    }
  };

  const element = h(
    'section',
    { 'aria-labelledby': 'view-title' },
    h('h2', { id: 'view-title', tabindex: '-1' }, `Pod ${name}`),
    meta,
    statusLine,
    h('h3', {}, 'Slots'),
    slotsBox,
    h('h3', {}, 'Spec'),
    specBox,
    h('h3', {}, 'History'),
    historyBox,
    h('h3', {}, 'Compare revisions'),
    diffForm,
    diffBox,
    h('h3', {}, 'Roll back'),
    rollbackForm,
    h('h3', {}, 'Lifecycle'),
    whyBox,
    h('h3', {}, 'Logs (this node)'),
    h('p', {}, h('button', { type: 'button', onclick: () => void loadLogs() }, 'Reload logs')),
    logsBox,
  );

  let first = true;
  let revisionsKey = '';
  const view = {
    title: `Pod ${name}`,
    /** Pods live in the document: peer notices (about once a second) change nothing here. */
    listensTo: ['doc'],
    element,
    async refresh() {
      const [described, history] = await Promise.allSettled([api.describe(name), api.history(name)]);
      if (described.status === 'fulfilled') {
        const d = described.value;
        replaceKeepingFocus(
          meta,
          `Revision ${d.revision} · `,
          h('a', { href: `#/edit/${encodeURIComponent(name)}` }, 'Edit spec'),
        );
        specBox.textContent = d.spec;
        replaceKeepingFocus(
          slotsBox,
          h(
            'table',
            {},
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ['Slot', 'Phase', 'Node', 'Revision', 'Restarts', 'Last error'].map((t) =>
                  h('th', { scope: 'col' }, t),
                ),
              ),
            ),
            h(
              'tbody',
              {},
              d.slots.map((s) =>
                h(
                  'tr',
                  {},
                  h('th', { scope: 'row' }, String(s.slot)),
                  h('td', { class: `phase phase-${s.phase}` }, s.phase),
                  h('td', {}, s.node ?? 'not placed'),
                  h('td', {}, revisionText(s)),
                  h('td', {}, String(s.restarts)),
                  h('td', {}, s.lastError ?? ''),
                ),
              ),
            ),
          ),
        );
      } else {
        replaceKeepingFocus(meta, h('span', { class: 'error' }, errorText(described.reason)));
        specBox.textContent = '';
        slotsBox.replaceChildren();
      }
      if (history.status === 'fulfilled') {
        revisions = history.value;
        replaceKeepingFocus(historyBox, historyTable(revisions));
        const usable = revisions.filter((r) => r.rejected === undefined && !r.compacted);
        const options = usable.map((r) => ({
          value: r.revision,
          label: `${r.revision} — ${r.kind} by ${r.author.actor}`,
        }));
        setOptions(fromSel, options, usable.at(-2)?.revision);
        setOptions(toSel, options, usable.at(-1)?.revision);
        const userRevs = usable.filter((r) => r.kind !== 'system');
        setOptions(targetSel, options, userRevs.at(-2)?.revision);
      } else {
        replaceKeepingFocus(historyBox, h('p', { class: 'error' }, errorText(history.reason)));
      }
      const key = JSON.stringify(revisions);
      const moved = key !== revisionsKey;
      revisionsKey = key;
      if (first) {
        first = false;
        await Promise.all([showDiff(), loadWhy(), loadLogs()]);
      } else {
        await Promise.all([moved ? showDiff() : undefined, loadWhy()]);
      }
    },
  };
  return view;
}
