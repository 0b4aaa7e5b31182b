// The page's calls to its own daemon: JSON over same-origin fetch; a failure carries the daemon's code, message, hint and details.

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message ?? `the daemon answered HTTP ${status}`);
    this.status = status;
    this.code = error.code ?? 'E_HTTP';
    this.hint = error.hint;
    this.details = error.details;
  }
}

async function call(method, path, body) {
  let res;
  try {
    res = await fetch(`/api${path}`, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, {
      error: { code: 'E_OFFLINE', message: 'the daemon did not answer', hint: 'Is meshd still running?' },
    });
  }
  const parsed = await res.json().catch(() => null);
  if (res.status === 401) window.dispatchEvent(new CustomEvent('meshd:signed-out'));
  if (!res.ok) throw new ApiError(res.status, parsed);
  return parsed;
}

export const api = {
  session: () => call('GET', '/session'),
  status: () => call('GET', '/status'),
  peers: () => call('GET', '/peers'),
  nodes: () => call('GET', '/nodes'),
  pods: () => call('GET', '/pods'),
  describe: (name) => call('GET', `/pods/${encodeURIComponent(name)}`),
  spec: (name) => call('GET', `/pods/${encodeURIComponent(name)}/spec`),
  history: (name) => call('GET', `/pods/${encodeURIComponent(name)}/history`),
  diff: (name, from, to) =>
    call('GET', `/pods/${encodeURIComponent(name)}/diff?${new URLSearchParams({ from, to })}`),
  why: (name) => call('GET', `/pods/${encodeURIComponent(name)}/why`),
  logs: (name, tail = 100) => call('GET', `/pods/${encodeURIComponent(name)}/logs?tail=${tail}`),
  apply: (req) => call('POST', '/pods', req),
  rollback: (name, req) => call('POST', `/pods/${encodeURIComponent(name)}/rollback`, req),
};
