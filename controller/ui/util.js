// Small DOM and formatting helpers shared by the console's views.

const SVG_NS = 'http://www.w3.org/2000/svg';

// h('div', {class: 'x', onclick: f}, 'text', child, [more]) -> an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k in el && typeof v !== 'string') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replaces the children of `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// `1.5 GiB`, as `ingot node watch` prints it.
export function bytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  if (n < 1024) return `${n} B`;
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u + 1 < units.length) {
    v /= 1024;
    u += 1;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

// `0:06`, `1:02:03`.
export function clock(ms) {
  const s = Math.round(ms / 1000);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

// `850 ms`, `12.3 s`, `4 min 2 s`.
export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}

// The agent's progress report (driver_internal_info.agent_progress) as the bar shows it:
// the same figures as `ingot node watch` (phase, percent, MB/s, ETA).
export function progressOf(p) {
  if (!p || typeof p !== 'object' || !p.phase) return null;
  const total = p.bytes_total > 0 ? p.bytes_total : null;
  const fetched = p.bytes_fetched || 0;
  const pct = total ? Math.min(100, Math.floor((fetched * 100) / total)) : null;
  let eta = null;
  if (total && fetched > 0 && p.elapsed_ms > 0) {
    eta = ((total - fetched) * p.elapsed_ms) / fetched;
  }
  const parts = [p.phase];
  if (pct !== null) parts.push(`${pct}%`);
  parts.push(total ? `${bytes(fetched)}/${bytes(total)}` : bytes(fetched));
  if (p.rate_bps) parts.push(`${(p.rate_bps / 1e6).toFixed(1)} MB/s`);
  if (eta !== null) parts.push(`ETA ${clock(eta)}`);
  return { pct, text: parts.join(' '), phase: p.phase };
}

// States in which an agent works on the node (its last report is stale in any other).
const WORKING = new Set([
  'deploying', 'wait call-back', 'cleaning', 'clean wait', 'inspecting', 'inspect wait',
  'rescuing', 'rescue wait', 'servicing', 'service wait',
]);

// A progress bar element for a report (or null), shown only while the agent works.
export function progressBar(p, state) {
  if (state !== undefined && !WORKING.has(state)) return null;
  const info = progressOf(p);
  if (!info) return null;
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${info.pct === null ? 100 : info.pct}%`;
  if (info.pct === null) fill.classList.add('indeterminate');
  return h(
    'div',
    { class: 'progress', role: 'progressbar', 'aria-valuenow': info.pct ?? '' },
    h('span', { class: 'bar' }, fill),
    h('span', { class: 'progress-text' }, info.text),
  );
}

// The CSS class of a provision state's badge.
export function stateClass(state) {
  if (!state) return 'st';
  if (/fail|error/.test(state)) return 'st st-bad';
  if (state === 'active') return 'st st-good';
  if (state === 'available' || state === 'manageable') return 'st st-ok';
  if (/ing$|wait/.test(state)) return 'st st-busy';
  return 'st';
}

export function badge(state, target) {
  return h(
    'span',
    { class: stateClass(state), dataset: { state: state || '' } },
    state || '-',
    target ? ` → ${target}` : '',
  );
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// A two-column table of key/value rows (values may be nodes).
export function kvTable(rows) {
  return h(
    'table',
    { class: 'kv' },
    h(
      'tbody',
      null,
      rows
        .filter(([, v]) => v !== undefined && v !== null && v !== '')
        .map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v))),
    ),
  );
}

// JSON shown compactly in a <pre>.
export function jsonBlock(v) {
  return h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
}

// Provision states of Ironic, for the filter.
export const PROVISION_STATES = [
  'enroll', 'verifying', 'manageable', 'inspecting', 'inspect wait', 'inspect failed',
  'cleaning', 'clean wait', 'clean failed', 'available', 'deploying', 'wait call-back',
  'deploy failed', 'active', 'deleting', 'error', 'rescuing', 'rescue wait', 'rescue failed',
  'rescue', 'unrescuing', 'unrescue failed', 'adopting', 'adopt failed', 'servicing',
  'service wait', 'service failed',
];
