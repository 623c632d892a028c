// Live updates: one EventSource per tab on /api/crm/events; views subscribe to event names.
// The browser reconnects by itself and sends Last-Event-ID, so nothing is missed across a drop.
const EVENTS = ['message', 'message_status', 'thread', 'call', 'payment', 'appointment'];
const listeners = new Map(EVENTS.map((name) => [name, new Set()]));
let source = null;
const idle = () => {};
let statusListener = idle;
let onClosed = null;

export function startLive(onStatus, closed) {
  statusListener = onStatus || statusListener;
  onClosed = closed || onClosed;
  if (source || typeof EventSource === 'undefined') return;
  source = new EventSource('/api/crm/events', { withCredentials: true });
  source.addEventListener('open', () => statusListener('open'));
  source.addEventListener('ready', () => statusListener('open'));
  source.addEventListener('error', () => {
    if (!source) return;
    if (source.readyState !== 2) { statusListener('reconnecting'); return; }
    // The server refused the stream (an ended session answers 401): ask once why, then try again later.
    statusListener('closed');
    source = null;
    if (onClosed) onClosed();
    setTimeout(() => { if (!source && statusListener !== idle) startLive(statusListener, onClosed); }, 5000);
  });
  for (const name of EVENTS) {
    source.addEventListener(name, (event) => {
      let data = {};
      try { data = JSON.parse(event.data || '{}'); } catch { return; }
      for (const fn of listeners.get(name)) {
        try { fn(data); } catch (error) { console.error(error); }
      }
    });
  }
}

export function stopLive() {
  if (source) source.close();
  source = null;
  statusListener = idle;
}

// Returns the unsubscribe function; views call it when they are left.
export function on(name, fn) {
  listeners.get(name).add(fn);
  return () => listeners.get(name).delete(fn);
}

// Many events in a burst → one refresh.
export function debounce(fn, wait = 150) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}
