// The rack: one row per node, a page at a time (the API's limit/marker), filtered by
// provision state and searched by name, UUID, MAC or serial (`ingot_search`), kept live
// from the event stream (rows change in place, new nodes appear, deleted ones go).

import { api } from './api.js';
import {
  badge, fill, h, progressBar, PROVISION_STATES,
} from './util.js';

const FIELDS = [
  'uuid', 'name', 'driver', 'provision_state', 'target_provision_state', 'power_state',
  'resource_class', 'maintenance', 'last_error', 'driver_internal_info',
].join(',');
export const PAGE = 50;

// The row's view of a node from the API (a list entry) or from the stream (a summary).
function rowData(n) {
  const internal = n.driver_internal_info || {};
  return {
    uuid: n.uuid,
    name: n.name,
    provision_state: n.provision_state,
    target_provision_state: n.target_provision_state,
    power_state: n.power_state,
    resource_class: n.resource_class,
    maintenance: n.maintenance,
    last_error: n.last_error,
    progress: 'progress' in n ? n.progress : internal.agent_progress,
  };
}

function cells(n) {
  const name = n.name || n.uuid;
  return [
    h('td', { class: 'c-name', dataset: { label: 'Name' } },
      h('a', { href: `#/node/${encodeURIComponent(n.uuid)}`, class: 'node-link' }, name),
      n.maintenance ? h('span', { class: 'tag tag-warn', title: 'maintenance' }, 'maint') : null),
    h('td', { class: 'c-uuid mono', dataset: { label: 'UUID' }, title: n.uuid }, n.uuid),
    h('td', { class: 'c-state', dataset: { label: 'State' } }, badge(n.provision_state, n.target_provision_state)),
    h('td', { class: 'c-power', dataset: { label: 'Power' } }, n.power_state || '-'),
    h('td', { class: 'c-rc', dataset: { label: 'Class' } }, n.resource_class || '-'),
    h('td', { class: 'c-progress', dataset: { label: 'Progress' } }, progressBar(n.progress, n.provision_state)),
    h('td', { class: 'c-error', dataset: { label: 'Last error' }, title: n.last_error || '' }, n.last_error || ''),
  ];
}

function row(n) {
  return h('tr', { dataset: { uuid: n.uuid, state: n.provision_state || '' } }, cells(n));
}

export function render(main, ctx, params) {
  const st = {
    filter: params.get('state') || '',
    q: params.get('q') || '',
    marker: null,
    history: [],
    next: null,
    rows: new Map(),
    fresh: 0,
    firstPaint: true,
  };
  const select = h(
    'select',
    { id: 'filter-state', 'aria-label': 'Provision state' },
    h('option', { value: '' }, 'all states'),
    PROVISION_STATES.map((s) => h('option', { value: s, selected: s === st.filter }, s)),
  );
  const search = h('input', {
    id: 'search', type: 'search', placeholder: 'name, UUID, MAC or serial', value: st.q, 'aria-label': 'Search',
  });
  const prev = h('button', { class: 'btn', id: 'page-prev', disabled: true }, '‹ Prev');
  const next = h('button', { class: 'btn', id: 'page-next', disabled: true }, 'Next ›');
  const pageLabel = h('span', { class: 'muted', id: 'page-label' }, '');
  const newer = h('button', { class: 'link', id: 'new-nodes', hidden: true }, '');
  const tbody = h('tbody', { id: 'rack-rows' });
  const empty = h('p', { class: 'muted', id: 'rack-empty', hidden: true }, 'No node matches.');
  const table = h(
    'table',
    { class: 'rack', id: 'rack' },
    h('thead', null, h('tr', null, ['Name', 'UUID', 'Provision state', 'Power', 'Resource class', 'Progress', 'Last error'].map((t) => h('th', null, t)))),
    tbody,
  );
  fill(
    main,
    h('section', { class: 'toolbar' }, select, search, h('span', { class: 'spacer' }), newer, prev, pageLabel, next),
    h('div', { class: 'table-wrap' }, table),
    empty,
  );

  // Events that arrive while a page is being fetched are applied after it is drawn (the
  // page may have been read before they happened); only the latest fetch draws.
  let seq = 0;
  let buffered = null;
  async function load() {
    const mine = ++seq;
    buffered = [];
    const q = new URLSearchParams({ fields: FIELDS, limit: String(PAGE) });
    if (st.marker) q.set('marker', st.marker);
    if (st.filter) q.set('provision_state', st.filter);
    if (st.q.trim()) q.set('ingot_search', st.q.trim());
    let body;
    try {
      body = await api('GET', `/v1/nodes?${q}`);
    } catch (e) {
      if (mine === seq) buffered = null;
      ctx.error(e);
      return;
    }
    if (mine !== seq) return;
    st.rows.clear();
    const rows = body.nodes.map((n) => {
      const d = rowData(n);
      const tr = row(d);
      st.rows.set(d.uuid, tr);
      return tr;
    });
    tbody.replaceChildren(...rows);
    st.next = body.next && body.nodes.length ? body.nodes[body.nodes.length - 1].uuid : null;
    prev.disabled = st.history.length === 0;
    next.disabled = !st.next;
    pageLabel.textContent = `page ${st.history.length + 1}`;
    empty.hidden = rows.length > 0;
    st.fresh = 0;
    newer.hidden = true;
    if (st.firstPaint) {
      st.firstPaint = false;
      performance.mark('rack-rendered');
      document.body.dataset.rackRendered = String(Math.round(performance.now()));
      // The frame after the one that drew the rows: the rack's first paint.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        document.body.dataset.rackPainted = String(Math.round(performance.now()));
      }));
    }
    const replay = buffered || [];
    buffered = null;
    for (const [name, data] of replay) onEvent(name, data);
  }

  // Once the view is gone (another route), its timers and fetches must not touch the URL.
  let alive = true;
  function restart() {
    if (!alive) return;
    st.marker = null;
    st.history = [];
    const hash = new URLSearchParams();
    if (st.filter) hash.set('state', st.filter);
    if (st.q) hash.set('q', st.q);
    const want = `#/rack${hash.toString() ? `?${hash}` : ''}`;
    if (window.location.hash !== want) window.history.replaceState(null, '', want);
    load();
  }

  select.addEventListener('change', () => {
    st.filter = select.value;
    restart();
  });
  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      st.q = search.value;
      restart();
    }, 250);
  });
  next.addEventListener('click', () => {
    if (!st.next) return;
    st.history.push(st.marker);
    st.marker = st.next;
    load();
  });
  prev.addEventListener('click', () => {
    if (st.history.length === 0) return;
    st.marker = st.history.pop();
    load();
  });
  newer.addEventListener('click', load);

  ctx.onHello(load);
  function onEvent(name, data) {
    if (buffered) {
      buffered.push([name, data]);
      return;
    }
    if (name === 'deleted') {
      const tr = st.rows.get(data.uuid);
      if (tr) {
        tr.remove();
        st.rows.delete(data.uuid);
      }
      return;
    }
    if (name !== 'node') return;
    const d = rowData(data);
    const tr = st.rows.get(d.uuid);
    if (tr) {
      tr.replaceChildren(...cells(d));
      tr.dataset.state = d.provision_state || '';
      return;
    }
    const matches = (!st.filter || d.provision_state === st.filter) && !st.q.trim();
    if (!matches) return;
    if (!st.next && st.rows.size < PAGE) {
      const added = row(d);
      added.classList.add('row-new');
      st.rows.set(d.uuid, added);
      tbody.append(added);
      empty.hidden = true;
    } else {
      st.fresh += 1;
      newer.textContent = `${st.fresh} new node${st.fresh > 1 ? 's' : ''}: reload`;
      newer.hidden = false;
    }
  }
  ctx.onLive(onEvent);
  // Loaded now and again at each (re)connection of the stream: what changed before the
  // stream was up is in that reload.
  load();
  return {
    cleanup: () => {
      alive = false;
      clearTimeout(timer);
    },
  };
}
