// The console's only way to the controller: the operator API with the user's credentials
// (HTTP basic, kept in sessionStorage for this tab only), JSON bodies with a JSON
// Content-Type (the API refuses anything else, which is its CSRF protection), and the node
// event stream read with fetch() (EventSource cannot send an Authorization header).

const KEY = 'ingot.console.credentials';
const VERSION = 'latest';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

export function setCredentials(user, password) {
  sessionStorage.setItem(KEY, JSON.stringify({ user, password }));
}

export function clearCredentials() {
  sessionStorage.removeItem(KEY);
}

export function hasCredentials() {
  return credentials() !== null;
}

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

function headers(extra) {
  const out = { Accept: 'application/json', 'X-OpenStack-Ironic-API-Version': VERSION };
  const c = credentials();
  if (c) out.Authorization = basic(c.user, c.password);
  return Object.assign(out, extra || {});
}

// Ironic's error body: {"error_message": "{\"faultstring\": ...}"} (a JSON string inside).
function messageOf(status, text) {
  try {
    const body = JSON.parse(text);
    let inner = body.error_message;
    if (typeof inner === 'string') {
      try {
        inner = JSON.parse(inner);
      } catch {
        return inner;
      }
    }
    if (inner && inner.faultstring) return inner.faultstring;
  } catch {
    // not JSON
  }
  return text || `HTTP ${status}`;
}

// One API call; resolves to the parsed body (null when empty), throws ApiError otherwise.
export async function api(method, path, body) {
  const init = { method, headers: headers(), credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `The controller cannot be reached (${e.message}).`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    if (resp.status === 401) window.dispatchEvent(new CustomEvent('ingot-unauthorized'));
    throw new ApiError(resp.status, messageOf(resp.status, text));
  }
  return text ? JSON.parse(text) : null;
}

// Follows GET /v1/ingot/events: calls onEvent(name, data) for each event and onStatus(s)
// with 'live', 'reconnecting' or 'stopped'. Reconnects with backoff; returns {close}.
export function followEvents(onEvent, onStatus) {
  let stopped = false;
  let controller = null;
  let delay = 500;
  async function once() {
    controller = new AbortController();
    const resp = await fetch('/v1/ingot/events', {
      headers: headers({ Accept: 'text/event-stream' }),
      credentials: 'omit',
      cache: 'no-store',
      signal: controller.signal,
    });
    if (resp.status === 401) {
      window.dispatchEvent(new CustomEvent('ingot-unauthorized'));
      stopped = true;
      return;
    }
    if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length === 0) continue;
        if (name === 'hello') {
          delay = 500;
          onStatus('live');
        }
        let parsed = null;
        try {
          parsed = JSON.parse(data.join('\n'));
        } catch {
          continue;
        }
        onEvent(name, parsed);
      }
    }
  }
  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch {
        // dropped, refused (503) or network: try again below
      }
      if (stopped) break;
      onStatus('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
    onStatus('stopped');
  })();
  return {
    close() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
