// Edit: a spec editor that applies a new revision; validation errors show inline with field path, line and column.

import { api } from './api.js';
import { h, replaceKeepingFocus } from './element.js';

const template = `kind: Pod
name: my-pod
spec:
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      ports: [{ name: http }]
      resources: { cpu: 0.25, memory: 64Mi }
  replicas: 1
`;

/** The problems of a refused apply, one per field, from the error's details (path, line, column). */
function issuesOf(err) {
  const d = err.details ?? {};
  if (Array.isArray(d.issues) && d.issues.length > 0) {
    return d.issues.map((i) => ({
      path: i.path ?? '',
      message: i.message ?? String(i.text ?? '').replace(/^.*? syntax error: /, 'syntax error: '),
      line: i.line,
      column: i.column,
    }));
  }
  return [{ path: d.path ?? '', message: err.message, line: d.line, column: d.column }];
}

/** Offset of 1-based `line`:`column` in `text`. */
function offsetOf(text, line, column) {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf('\n', offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  return Math.min(text.length, offset + Math.max(0, (column ?? 1) - 1));
}

export function editView(name, ctx) {
  const textarea = h('textarea', {
    id: 'spec-text',
    rows: 22,
    spellcheck: 'false',
    autocapitalize: 'off',
    autocomplete: 'off',
    'aria-describedby': 'spec-errors',
  });
  const message = h('input', { id: 'spec-message', type: 'text', autocomplete: 'off' });
  const actor = ctx.actorInput('spec-actor');
  const applyButton = h('button', { type: 'submit' }, 'Apply');
  const errorsBox = h('div', { id: 'spec-errors', class: 'errors', 'aria-live': 'assertive' });
  const statusLine = h('p', { role: 'status', class: 'status-line' });
  const staleNote = h('p', { class: 'note', 'aria-live': 'polite' });
  const picker = h('div', {});
  let loadedRevision = null;

  const showErrors = (err) => {
    const issues = issuesOf(err);
    textarea.setAttribute('aria-invalid', 'true');
    replaceKeepingFocus(
      errorsBox,
      h('p', { class: 'error' }, `Not applied — nothing changed. ${issues.length} problem(s):`),
      h(
        'ul',
        { class: 'issues' },
        issues.map((i, n) =>
          h(
            'li',
            { class: 'issue', dataset: { path: i.path } },
            i.line === undefined
              ? null
              : h(
                  'button',
                  {
                    type: 'button',
                    class: 'link',
                    dataset: { focusKey: `issue-${n}` },
                    onclick: () => {
                      const at = offsetOf(textarea.value, i.line, i.column);
                      textarea.focus();
                      textarea.setSelectionRange(at, at);
                    },
                  },
                  `line ${i.line}, column ${i.column}`,
                ),
            i.line === undefined ? null : ' ',
            i.path === '' ? null : h('code', { class: 'path' }, i.path),
            i.path === '' ? null : ': ',
            i.message,
          ),
        ),
      ),
      err.hint ? h('p', { class: 'hint' }, err.hint) : null,
    );
  };

  const clearErrors = () => {
    textarea.removeAttribute('aria-invalid');
    errorsBox.replaceChildren();
  };

  const form = h(
    'form',
    {
      class: 'stack',
      onsubmit: async (e) => {
        e.preventDefault();
        applyButton.disabled = true;
        statusLine.textContent = 'Applying…';
        try {
          const res = await api.apply({
            text: textarea.value,
            message: message.value,
            actor: actor.value,
            ...(name === undefined ? {} : { expectName: name }),
          });
          clearErrors();
          loadedRevision = res.revision;
          staleNote.textContent = '';
          message.value = '';
          replaceKeepingFocus(
            statusLine,
            res.changed
              ? `Applied: pod ${res.name} is at revision ${res.revision}. `
              : `No change: the spec equals revision ${res.revision}. `,
            h('a', { href: `#/pods/${encodeURIComponent(res.name)}` }, `Open pod ${res.name}`),
          );
        } catch (err) {
          statusLine.textContent = '';
          showErrors(err);
        } finally {
          applyButton.disabled = false;
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'spec-text' }, 'Spec (YAML or JSON)'), textarea),
    errorsBox,
    h('div', { class: 'field' }, h('label', { for: 'spec-message' }, 'Why (optional)'), message),
    h('div', { class: 'field' }, h('label', { for: 'spec-actor' }, 'Recorded as'), actor),
    h('div', {}, applyButton),
  );

  const element = h(
    'section',
    { 'aria-labelledby': 'view-title' },
    h('h2', { id: 'view-title', tabindex: '-1' }, name === undefined ? 'New pod' : `Edit pod ${name}`),
    picker,
    staleNote,
    form,
    statusLine,
  );

  let loaded = false;
  return {
    title: name === undefined ? 'New pod' : `Edit pod ${name}`,
    /** Pods live in the document: peer notices (about once a second) change nothing here. */
    listensTo: ['doc'],
    element,
    async refresh() {
      if (name === undefined) {
        if (loaded) return;
        loaded = true;
        textarea.value = template;
        const names = [...new Set((await api.pods()).map((p) => p.name))].sort();
        if (names.length > 0) {
          replaceKeepingFocus(
            picker,
            h(
              'p',
              {},
              'Or edit an existing pod: ',
              names.flatMap((n, i) => [
                i === 0 ? '' : ', ',
                h('a', { href: `#/edit/${encodeURIComponent(n)}` }, n),
              ]),
            ),
          );
        }
        return;
      }
      const live = await api.spec(name);
      if (!loaded) {
        loaded = true;
        textarea.value = live.text;
        loadedRevision = live.revision;
        return;
      }
      // Never overwrite what the user is typing: say that the pod moved on, offer to reload.
      if (live.revision !== loadedRevision) {
        replaceKeepingFocus(
          staleNote,
          `Pod ${name} changed since this text was loaded (now revision ${live.revision}). `,
          h(
            'button',
            {
              type: 'button',
              dataset: { focusKey: 'reload-spec' },
              onclick: () => {
                textarea.value = live.text;
                loadedRevision = live.revision;
                staleNote.textContent = '';
                clearErrors();
              },
            },
            'Load the current spec',
          ),
        );
      }
    },
  };
}
