// The dashboard page: signs in with the link's token, routes between views and re-fetches on every live notice.

import { api } from './api.js';
import { h } from './element.js';
import { connectLive } from './live-socket.js';
import { peerMapView } from './peer-map.js';
import { podPageView, podsListView } from './pods-view.js';
import { editView } from './spec-editor.js';

const main = document.getElementById('main');
const liveLine = document.getElementById('live');
const problemLine = document.getElementById('problem');
const nodeLabel = document.getElementById('node-name');
const actorKey = 'meshd.actor';

/** A link opened while a session already exists still carries #token=: trade it again, then drop it. */
async function signInFromHash() {
  const m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m === null) return;
  history.replaceState(null, '', '/#/peers');
  await fetch('/auth', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: m[1] }),
    credentials: 'same-origin',
  }).catch(() => undefined);
}

function makeContext(session) {
  return {
    session,
    /** The "recorded as" field of every write form; remembered in this browser. */
    actorInput(id) {
      const input = h('input', { id, type: 'text', autocomplete: 'off', placeholder: session.actor });
      input.value = localStorage.getItem(actorKey) ?? '';
      input.addEventListener('input', () => localStorage.setItem(actorKey, input.value.trim()));
      return input;
    },
  };
}

function notFoundView(path) {
  return {
    title: 'Not found',
    element: h(
      'section',
      {},
      h('h2', { id: 'view-title', tabindex: '-1' }, 'Not found'),
      h('p', {}, `Nothing at ${path}. `, h('a', { href: '#/peers' }, 'Back to the peer map')),
    ),
    refresh: async () => {},
  };
}

function viewFor(hash, ctx) {
  const path = hash.replace(/^#/, '') || '/peers';
  const pod = /^\/pods\/([^/]+)$/.exec(path);
  const edit = /^\/edit\/([^/]+)$/.exec(path);
  if (path === '/peers') return { section: 'peers', view: peerMapView(ctx) };
  if (path === '/pods') return { section: 'pods', view: podsListView(ctx) };
  if (pod !== null) return { section: 'pods', view: podPageView(decodeURIComponent(pod[1]), ctx) };
  if (path === '/edit') return { section: 'edit', view: editView(undefined, ctx) };
  if (edit !== null) return { section: 'edit', view: editView(decodeURIComponent(edit[1]), ctx) };
  return { section: '', view: notFoundView(path) };
}

function showProblem(text) {
  problemLine.textContent = text ?? '';
  problemLine.hidden = text === null;
}

async function start() {
  await signInFromHash();
  let session;
  try {
    session = await api.session();
  } catch (err) {
    showProblem(`${err.message}${err.hint ? ` — ${err.hint}` : ''}`);
    return;
  }
  nodeLabel.textContent = `· node ${session.node}`;
  const ctx = makeContext(session);
  let current;
  let running = false;
  let again = false;

  const refresh = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    const view = current;
    try {
      do {
        again = false;
        await view.refresh();
      } while (again && view === current);
      showProblem(null);
    } catch (err) {
      showProblem(`${err.message}${err.hint ? ` — ${err.hint}` : ''}`);
    } finally {
      running = false;
      if (view !== current) void refresh();
    }
  };

  const mount = (moveFocus) => {
    const { section, view } = viewFor(location.hash, ctx);
    current?.dispose?.();
    current = view;
    for (const a of document.querySelectorAll('nav a')) {
      if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    document.title = `${view.title} · meshd ${session.node}`;
    main.replaceChildren(view.element);
    if (moveFocus) document.getElementById('view-title')?.focus();
    void refresh();
  };

  window.addEventListener('hashchange', async () => {
    // A fresh link pasted into an open dashboard: sign in with it, then show the peer map.
    if (location.hash.startsWith('#token=')) await signInFromHash();
    mount(true);
  });
  window.addEventListener('meshd:signed-out', () =>
    showProblem(
      'Signed out: this dashboard token is no longer valid. Run `meshd dashboard` for a fresh link.',
    ),
  );
  mount(false);

  const words = { live: '● live', connecting: 'connecting…', offline: 'live updates lost — reconnecting' };
  connectLive({
    onState: (state) => {
      document.body.dataset.live = state;
      liveLine.textContent = words[state];
    },
    onNotice: (notice) => {
      if (notice.type === 'reconnected' || (current.listensTo ?? [notice.type]).includes(notice.type))
        void refresh();
    },
  });
}

void start();
