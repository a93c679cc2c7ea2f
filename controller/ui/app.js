// The console's shell: login, the header, the hash router, the live event stream shared by
// the views, the error banner and the confirmation dialog.

import {
  api, ApiError, clearCredentials, followEvents, hasCredentials, setCredentials,
} from './api.js';
import { fill, h } from './util.js';
import * as rack from './rack.js';
import * as node from './node.js';
import * as forms from './forms.js';

const session = { user: null, role: null, project: null, strategy: null, canWrite: false };
const listeners = new Set();
const helloListeners = new Set();
let events = null;
let cleanup = null;
// While signing in, a 401 is the login form's to report.
let signingIn = true;

const root = document.getElementById('app');

// What the views are given.
const ctx = {
  session,
  // fn(name, data) for every live event while the view is shown.
  onLive(fn) {
    listeners.add(fn);
  },
  // fn() whenever the stream (re)connects: reload what is shown, nothing was missed since.
  onHello(fn) {
    helloListeners.add(fn);
  },
  navigate(hash) {
    window.location.hash = hash;
  },
  run: runAction,
  confirm: confirmDialog,
  error: showError,
  notice: showNotice,
};

export function showError(err) {
  const bar = document.getElementById('banner');
  if (!bar) return;
  let text = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
  if (err instanceof ApiError && err.status === 403) {
    text = `Forbidden (403): ${err.message}`;
  } else if (err instanceof ApiError && err.status === 404 && !text) {
    text = 'Not found (404).';
  } else if (err instanceof ApiError && err.status) {
    text = `${text} (HTTP ${err.status})`;
  }
  fill(bar, h('span', null, text), h('button', { class: 'link', onclick: clearBanner }, 'dismiss'));
  bar.className = 'banner banner-error';
  bar.hidden = false;
}

export function showNotice(text) {
  const bar = document.getElementById('banner');
  if (!bar) return;
  fill(bar, h('span', null, text), h('button', { class: 'link', onclick: clearBanner }, 'dismiss'));
  bar.className = 'banner banner-ok';
  bar.hidden = false;
}

function clearBanner() {
  const bar = document.getElementById('banner');
  if (bar) bar.hidden = true;
}

// Runs an API action, showing its error (a 403 for a reader) in the banner.
export async function runAction(label, fn) {
  clearBanner();
  try {
    const out = await fn();
    showNotice(`${label}: accepted.`);
    return out;
  } catch (e) {
    showError(e);
    return undefined;
  }
}

// Asks before a destructive action; resolves true when confirmed.
export function confirmDialog(question, detail) {
  return new Promise((resolve) => {
    const dlg = h(
      'dialog',
      { class: 'confirm', id: 'confirm' },
      h('p', { class: 'confirm-q' }, question),
      detail ? h('p', { class: 'muted' }, detail) : null,
      h(
        'div',
        { class: 'confirm-buttons' },
        h('button', { class: 'btn', id: 'confirm-no', onclick: () => done(false) }, 'Cancel'),
        h('button', { class: 'btn btn-danger', id: 'confirm-yes', onclick: () => done(true) }, 'Confirm'),
      ),
    );
    function done(v) {
      dlg.close();
      dlg.remove();
      resolve(v);
    }
    dlg.addEventListener('cancel', () => done(false));
    document.body.append(dlg);
    dlg.showModal();
  });
}

function loginView(message) {
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true });
  const password = h('input', {
    id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const err = h('p', { class: 'error', id: 'login-error' }, message || '');
  const form = h(
    'form',
    { class: 'login card', id: 'login' },
    h('h1', null, 'Ingot'),
    h('p', { class: 'muted' }, 'Sign in with your API user (http_basic).'),
    h('label', null, 'User', user),
    h('label', null, 'Password', password),
    err,
    h('button', { class: 'btn btn-primary', type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    setCredentials(user.value, password.value);
    signingIn = true;
    try {
      await start();
    } catch (ex) {
      clearCredentials();
      err.textContent = ex instanceof ApiError && ex.status === 401
        ? 'Wrong user or password.'
        : String(ex.message || ex);
    } finally {
      signingIn = false;
    }
  });
  fill(root, form);
  user.focus();
}

function logout() {
  clearCredentials();
  if (events) events.close();
  events = null;
  loginView('');
}

function shell() {
  const live = h('span', { id: 'live', class: 'live live-off', title: 'live updates' }, 'connecting');
  const nav = h(
    'nav',
    { class: 'nav' },
    h('a', { href: '#/rack', dataset: { route: 'rack' } }, 'Rack'),
    h('a', { href: '#/discovered', dataset: { route: 'discovered' } }, 'Discovered'),
    h('a', { href: '#/request', dataset: { route: 'request' } }, 'Request a machine'),
  );
  const who = session.user
    ? h('span', { class: 'who', id: 'who' }, `${session.user} (${session.role})`)
    : h('span', { class: 'who', id: 'who' }, `noauth (${session.role})`);
  const out = session.strategy === 'http_basic'
    ? h('button', { class: 'link', id: 'logout', onclick: logout }, 'Sign out')
    : null;
  fill(
    root,
    h('header', { class: 'top' }, h('a', { class: 'brand', href: '#/rack' }, 'Ingot'), nav, h('span', { class: 'spacer' }), live, who, out),
    h('div', { id: 'banner', class: 'banner', hidden: true, role: 'alert' }),
    h('main', { id: 'main' }),
  );
  document.body.classList.toggle('reader', !session.canWrite);
}

function setLive(status) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = status;
  el.className = `live ${status === 'live' ? 'live-on' : 'live-off'}`;
}

function route() {
  const main = document.getElementById('main');
  if (!main) return;
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  listeners.clear();
  helloListeners.clear();
  clearBanner();
  const hash = window.location.hash.replace(/^#\/?/, '') || 'rack';
  document.body.dataset.route = window.location.hash;
  const [name, arg] = hash.split('/');
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('current', a.dataset.route === name);
  }
  main.replaceChildren();
  let view;
  if (name === 'node' && arg) view = node.render(main, ctx, decodeURIComponent(arg));
  else if (name === 'discovered') view = forms.renderDiscovered(main, ctx);
  else if (name === 'request') view = forms.renderRequest(main, ctx);
  else if (name === 'server' && arg) view = forms.renderServer(main, ctx, decodeURIComponent(arg));
  else view = rack.render(main, ctx, new URLSearchParams(hash.split('?')[1] || ''));
  cleanup = view && view.cleanup;
}

async function start() {
  const me = await api('GET', '/v1/ingot/whoami');
  session.user = me.user;
  session.role = me.role;
  session.project = me.project;
  session.strategy = me.auth_strategy;
  session.canWrite = me.role !== 'reader';
  shell();
  events = followEvents(
    (name, data) => {
      if (name === 'hello') {
        for (const fn of helloListeners) fn();
        return;
      }
      for (const fn of listeners) fn(name, data);
    },
    setLive,
  );
  route();
}

window.addEventListener('hashchange', route);
window.addEventListener('ingot-unauthorized', () => {
  if (signingIn) return;
  if (session.strategy === 'http_basic' || hasCredentials()) {
    clearCredentials();
    if (events) events.close();
    events = null;
    loginView('Your session ended: sign in again.');
  }
});

(async () => {
  try {
    await start();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      clearCredentials();
      loginView('');
    } else {
      fill(root, h('p', { class: 'error' }, `The controller cannot be reached: ${e.message || e}`));
    }
  } finally {
    signingIn = false;
  }
})();
