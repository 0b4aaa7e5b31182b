// The live channel: one WebSocket to the daemon, reopened with backoff; every notice asks the page to re-fetch.

/**
 * Calls `onNotice({type, at})` for every change the daemon reports and `onState(state)` with
 * 'live' | 'connecting' | 'offline'. Returns a function that closes the channel for good.
 */
export function connectLive({ onNotice, onState }) {
  let socket;
  let closed = false;
  let retryMs = 250;
  let timer;

  const open = () => {
    onState('connecting');
    socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    socket.addEventListener('open', () => {
      retryMs = 250;
      onState('live');
      // Whatever changed while the channel was down is fetched now.
      onNotice({ type: 'reconnected', at: Date.now() });
    });
    socket.addEventListener('message', (e) => {
      try {
        onNotice(JSON.parse(e.data));
      } catch {
        // not a notice; ignore
      }
    });
    socket.addEventListener('close', () => {
      if (closed) return;
      onState('offline');
      timer = setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    });
  };
  open();
  return () => {
    closed = true;
    clearTimeout(timer);
    socket?.close();
  };
}
