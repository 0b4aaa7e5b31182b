// The one page the dashboard serves without a session: it trades the link's #token for a cookie, or says how to get a link.

import { createHash } from 'node:crypto';

// The token travels in the URL fragment, which browsers never send to a server, put in a Referer or
// keep in server logs. This script posts it once to /auth, then drops it from the address bar.
const script = `
const note = document.getElementById('note');
const m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
if (m !== null) {
  note.textContent = 'Signing in…';
  fetch('/auth', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: m[1] }),
    credentials: 'same-origin',
  }).then((res) => {
    if (res.ok) {
      history.replaceState(null, '', '/#/peers');
      location.reload();
    } else {
      history.replaceState(null, '', '/');
      note.textContent = 'The token in this link is not valid for this node (it may have been replaced). Run meshd dashboard again for a fresh link.';
    }
  }, () => {
    note.textContent = 'The daemon did not answer. Is meshd still running on this machine?';
  });
}
`;

const style = `
body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 36rem; padding: 0 1rem; color: #1b1b1b; }
code { background: #eee; padding: 0.1rem 0.3rem; border-radius: 3px; }
`;

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/** Content-Security-Policy of the login page: nothing but its own inline script and style, and fetch to itself. */
export const loginPageCsp = [
  "default-src 'none'",
  `script-src ${sha256(script)}`,
  `style-src ${sha256(style)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const loginPageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>meshd dashboard — sign in</title>
<style>${style}</style>
</head>
<body>
<h1>meshd dashboard</h1>
<p id="note" role="status">This dashboard needs the link printed by <code>meshd dashboard</code> on this machine.
Run it and open the link it prints.</p>
<script>${script}</script>
</body>
</html>
`;
