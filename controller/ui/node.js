// One node: state and live progress, actions (not for readers), properties, inventory,
// ports, history with phase timings and the last deploy's timeline as an inline SVG chart.

import { api } from './api.js';
import {
  badge, bytes, duration, fill, h, jsonBlock, kvTable, progressBar, svg, time,
} from './util.js';

// `deploy requested: available -> deploying` -> ['available', 'deploying'].
const TRANSITION = /([a-z][a-z-]*(?: [a-z-]+)*) -> ([a-z][a-z-]*(?: [a-z-]+)*)/;

export function transitionOf(text) {
  const m = TRANSITION.exec(text || '');
  return m ? { from: m[1], to: m[2] } : null;
}

// Each history event with the time until the next one (the phase it began).
export function phases(history, now) {
  return history.map((e, i) => {
    const start = Date.parse(e.created_at);
    const nextAt = i + 1 < history.length ? Date.parse(history[i + 1].created_at) : null;
    const t = transitionOf(e.event);
    return { ...e, t, start, ms: nextAt !== null ? nextAt - start : null, open: nextAt === null, now };
  });
}

// The segments of the last deploy: from its `-> deploying` to the state it rested in.
export function lastDeploy(history, now) {
  const ph = phases(history, now);
  let first = -1;
  for (let i = ph.length - 1; i >= 0; i -= 1) {
    if (ph[i].t && ph[i].t.to === 'deploying') {
      first = i;
      break;
    }
  }
  if (first < 0) return [];
  const out = [];
  for (let i = first; i < ph.length; i += 1) {
    const p = ph[i];
    if (!p.t) continue;
    const rest = ['active', 'deploy failed', 'available', 'manageable', 'error'].includes(p.t.to);
    if (rest && i > first) {
      out.push({ state: p.t.to, start: p.start, ms: 0, end: true });
      break;
    }
    const ms = p.ms !== null ? p.ms : now - p.start;
    out.push({ state: p.t.to, start: p.start, ms, end: false });
  }
  return out;
}

// An SVG bar chart: one row per phase, bars on a shared time axis.
export function timelineChart(segments) {
  if (segments.length === 0) return h('p', { class: 'muted' }, 'No deploy yet.');
  const t0 = segments[0].start;
  const last = segments[segments.length - 1];
  const total = Math.max(1, last.start + last.ms - t0);
  const rowH = 22;
  const labelW = 130;
  const width = 560;
  const barW = width - labelW - 90;
  const chart = svg('svg', {
    class: 'timeline', id: 'deploy-timeline', viewBox: `0 0 ${width} ${segments.length * rowH + 6}`, role: 'img',
    'aria-label': `last deploy: ${duration(total)}`,
  });
  segments.forEach((s, i) => {
    const y = i * rowH + 3;
    const x = labelW + ((s.start - t0) / total) * barW;
    const w = s.end ? 3 : Math.max(2, (s.ms / total) * barW);
    chart.append(
      svg('text', { x: 0, y: y + 14, class: 'tl-label' }, s.state),
      svg('rect', { x, y: y + 3, width: w, height: rowH - 8, rx: 2, class: `tl-bar ${s.end ? 'tl-end' : ''}` }),
      svg('text', { x: x + w + 6, y: y + 14, class: 'tl-ms' }, s.end ? time(new Date(s.start).toISOString()) : duration(s.ms)),
    );
  });
  return h('div', null, chart, h('p', { class: 'muted' }, `Total ${duration(total)}.`));
}

const ACTIONS = [
  // [id, label, method/path builder, states where offered (null: always), confirmation]
  ['power-on', 'Power on', { power: 'power on' }, null, null],
  ['power-off', 'Power off', { power: 'power off' }, null, 'Power the machine off now? Anything running on it stops.'],
  ['reboot', 'Reboot', { power: 'rebooted' }, null, 'Reboot the machine now?'],
  ['manage', 'Manage', { provision: 'manage' }, ['enroll', 'available', 'clean failed', 'inspect failed'], null],
  ['provide', 'Provide', { provision: 'provide' }, ['manageable'], 'Provide cleans the machine: its disks are wiped. Continue?'],
  ['undeploy', 'Undeploy', { provision: 'deleted' }, ['active', 'deploy failed', 'error'], 'Undeploy removes the instance and wipes the disks. Continue?'],
  ['maint-on', 'Maintenance on', { maintenance: true }, null, null],
  ['maint-off', 'Maintenance off', { maintenance: false }, null, null],
];

// Runs an action on a node (exported so a test can force a write as a reader).
export async function act(ctx, uuid, what) {
  const base = `/v1/nodes/${encodeURIComponent(uuid)}`;
  if (what.power) return api('PUT', `${base}/states/power`, { target: what.power });
  if (what.provision) return api('PUT', `${base}/states/provision`, { target: what.provision });
  if (what.maintenance === true) return api('PUT', `${base}/maintenance`, { reason: 'set from the console' });
  if (what.maintenance === false) return api('DELETE', `${base}/maintenance`);
  return null;
}

function actionBar(ctx, n, openDeploy) {
  if (!ctx.session.canWrite) return null;
  const buttons = [];
  for (const [id, label, what, states, question] of ACTIONS) {
    if (states && !states.includes(n.provision_state)) continue;
    if (id === 'maint-on' && n.maintenance) continue;
    if (id === 'maint-off' && !n.maintenance) continue;
    const danger = question !== null;
    buttons.push(h('button', {
      class: `btn ${danger ? 'btn-danger' : ''}`,
      id: `act-${id}`,
      onclick: async () => {
        if (question && !(await ctx.confirm(question, `${n.name || n.uuid}`))) return;
        await ctx.run(label, () => act(ctx, n.uuid, what));
      },
    }, label));
  }
  if (n.provision_state === 'available') {
    buttons.push(h('button', { class: 'btn btn-primary', id: 'act-deploy', onclick: openDeploy }, 'Deploy…'));
  }
  return h('div', { class: 'actions', id: 'actions' }, buttons);
}

// The deploy form: an image from GET /v1/ingot/images, else a URL and its sha256.
async function deployForm(ctx, n, slot) {
  let images = null;
  try {
    images = (await api('GET', '/v1/ingot/images')).images || [];
  } catch {
    images = null;
  }
  const image = images && images.length
    ? h('select', { id: 'deploy-image' }, images.map((i) => h('option', { value: `ingot://${i.name}` }, i.name)))
    : h('input', { id: 'deploy-image', placeholder: 'http://…/image.raw.zst or ingot://NAME', required: true });
  const checksum = h('input', { id: 'deploy-checksum', placeholder: 'sha256 (for an http URL)' });
  const key = h('textarea', { id: 'deploy-ssh-key', rows: 2, placeholder: 'ssh-ed25519 AAAA… (optional)' });
  const form = h(
    'form',
    { class: 'card form', id: 'deploy-form' },
    h('h3', null, 'Deploy'),
    h('label', null, 'Image', image),
    images && images.length ? null : h('label', null, 'Checksum', checksum),
    h('label', null, 'SSH key', key),
    h('div', { class: 'form-buttons' },
      h('button', { class: 'btn', type: 'button', onclick: () => slot.replaceChildren() }, 'Cancel'),
      h('button', { class: 'btn btn-primary', type: 'submit', id: 'deploy-submit' }, 'Deploy')),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const patch = [{ op: 'add', path: '/instance_info/image_source', value: image.value.trim() }];
    if (checksum.value.trim()) {
      patch.push({ op: 'add', path: '/instance_info/image_checksum', value: checksum.value.trim() });
    }
    const body = { target: 'active' };
    if (key.value.trim()) body.configdrive = { meta_data: { public_keys: { 0: key.value.trim() } } };
    const base = `/v1/nodes/${encodeURIComponent(n.uuid)}`;
    const ok = await ctx.run('Deploy', async () => {
      await api('PATCH', base, patch);
      return api('PUT', `${base}/states/provision`, body);
    });
    if (ok !== undefined) slot.replaceChildren();
  });
  fill(slot, form);
}

function inventorySection(inv) {
  if (!inv) return h('p', { class: 'muted', id: 'no-inventory' }, 'No inventory (the node was not inspected).');
  const i = inv.inventory || inv;
  const sys = i.system_vendor || {};
  const cpu = i.cpu || {};
  const mem = i.memory || {};
  const disks = i.disks || [];
  const nics = i.interfaces || [];
  return h(
    'div',
    { id: 'inventory' },
    kvTable([
      ['Manufacturer', sys.manufacturer],
      ['Product', sys.product_name],
      ['Serial', sys.serial_number],
      ['System UUID', sys.uuid],
      ['Firmware', sys.firmware ? `${sys.firmware.vendor || ''} ${sys.firmware.version || ''}` : null],
      ['CPU', cpu.model_name ? `${cpu.count || '?'} × ${cpu.model_name} (${cpu.architecture || ''})` : null],
      ['Memory', mem.physical_mb ? `${mem.physical_mb} MiB` : bytes(mem.total)],
      ['Boot mode', i.boot && i.boot.current_boot_mode],
    ]),
    h('h4', null, `Disks (${disks.length})`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'disks' },
      h('thead', null, h('tr', null, ['Device', 'Model', 'Size', 'Serial', 'WWN', 'Type'].map((t) => h('th', null, t)))),
      h('tbody', null, disks.map((d) => h('tr', null,
        h('td', { class: 'mono' }, d.name),
        h('td', null, d.model || ''),
        h('td', null, bytes(d.size)),
        h('td', { class: 'mono' }, d.serial || ''),
        h('td', { class: 'mono' }, d.wwn || ''),
        h('td', null, d.rotational ? 'HDD' : 'SSD')))))),
    h('h4', null, `NICs (${nics.length})`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'nics' },
      h('thead', null, h('tr', null, ['Name', 'MAC', 'Speed', 'Address', 'Driver', 'LLDP'].map((t) => h('th', null, t)))),
      h('tbody', null, nics.map((n) => h('tr', null,
        h('td', null, n.name),
        h('td', { class: 'mono' }, n.mac_address),
        h('td', null, n.speed_mbps ? `${n.speed_mbps} Mb/s` : ''),
        h('td', { class: 'mono' }, n.ipv4_address || ''),
        h('td', null, n.driver || ''),
        h('td', { class: 'lldp' }, lldpText(n.lldp))))))),
  );
}

// A NIC's LLDP neighbour in one line: switch (name, else chassis ID), port, native VLAN.
function lldpText(l) {
  if (!l) return '—';
  const parts = [l.system_name || l.chassis_id, l.port_id];
  if (l.port_vlan_id) parts.push(`VLAN ${l.port_vlan_id}`);
  if (l.vlans && l.vlans.length) parts.push(`VLANs ${l.vlans.map((v) => v.id).join(',')}`);
  return parts.join(' · ');
}

function portsSection(ports) {
  if (!ports.length) return h('p', { class: 'muted' }, 'No ports.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'ports' },
    h('thead', null, h('tr', null, ['MAC', 'PXE', 'Switch (LLDP)', 'Port'].map((t) => h('th', null, t)))),
    h('tbody', null, ports.map((p) => {
      const llc = p.local_link_connection || {};
      return h('tr', null,
        h('td', { class: 'mono' }, p.address),
        h('td', null, p.pxe_enabled ? 'yes' : 'no'),
        h('td', null, llc.switch_info || llc.switch_id || '—'),
        h('td', null, llc.port_id || '—'));
    }))));
}

function historySection(history) {
  const now = Date.now();
  const ph = phases(history, now);
  const rows = ph.slice().reverse().map((e) => h('tr', { class: e.severity === 'ERROR' ? 'row-error' : '' },
    h('td', { class: 'nowrap' }, time(e.created_at)),
    h('td', null, e.event_type),
    h('td', null, e.event),
    h('td', { class: 'nowrap' }, e.ms !== null ? duration(e.ms) : (e.t ? 'now' : ''))));
  return h(
    'div',
    null,
    h('h4', null, 'Last deploy'),
    timelineChart(lastDeploy(history, now)),
    h('h4', null, 'History'),
    history.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'history' },
        h('thead', null, h('tr', null, ['When', 'Type', 'Event', 'Phase took'].map((t) => h('th', null, t)))),
        h('tbody', null, rows)))
      : h('p', { class: 'muted' }, 'No history.'),
  );
}

export function render(main, ctx, ident) {
  const head = h('section', { class: 'node-head', id: 'node-head' });
  const deploySlot = h('div', { id: 'deploy-slot' });
  const body = h('div', { class: 'node-body' });
  const historySlot = h('section', { class: 'card', id: 'history-card' });
  fill(main, h('p', null, h('a', { href: '#/rack' }, '← Rack')), head, deploySlot, body, historySlot);
  let node = null;

  function drawHead() {
    const n = node;
    fill(
      head,
      h('h2', null, n.name || n.uuid, n.maintenance ? h('span', { class: 'tag tag-warn' }, 'maintenance') : null),
      h('div', { class: 'node-state' },
        h('span', { id: 'node-state' }, badge(n.provision_state, n.target_provision_state)),
        h('span', { class: 'muted', id: 'node-power' }, `power: ${n.power_state || '-'}`),
        h('span', { id: 'node-progress' }, progressBar(n.progress, n.provision_state))),
      n.last_error ? h('p', { class: 'error', id: 'node-error' }, n.last_error) : null,
      actionBar(ctx, n, () => deployForm(ctx, n, deploySlot)),
    );
  }

  async function loadHistory() {
    try {
      const hist = await api('GET', `/v1/nodes/${encodeURIComponent(node.uuid)}/history`);
      fill(historySlot, historySection(hist.history || []));
    } catch (e) {
      fill(historySlot, h('p', { class: 'error' }, e.message));
    }
  }

  // As in the rack: events during a fetch are applied after it, the latest fetch wins.
  let seq = 0;
  let buffered = null;
  async function load() {
    const mine = ++seq;
    buffered = [];
    let full;
    try {
      full = await api('GET', `/v1/nodes/${encodeURIComponent(ident)}`);
    } catch (e) {
      if (mine === seq) buffered = null;
      fill(head, h('p', { class: 'error' }, e.status === 404 ? `Node ${ident} was not found.` : e.message));
      ctx.error(e);
      return;
    }
    if (mine !== seq) return;
    node = { ...full, progress: (full.driver_internal_info || {}).agent_progress };
    drawHead();
    const replay = buffered || [];
    buffered = null;
    for (const [name, data] of replay) onEvent(name, data);
    const [ports, inv] = await Promise.all([
      api('GET', `/v1/nodes/${encodeURIComponent(node.uuid)}/ports?detail=True`).then((b) => b.ports).catch(() => []),
      api('GET', `/v1/nodes/${encodeURIComponent(node.uuid)}/inventory`).catch(() => null),
    ]);
    fill(
      body,
      h('section', { class: 'card' }, h('h3', null, 'Properties'), kvTable([
        ['UUID', h('span', { class: 'mono' }, node.uuid)],
        ['Driver', node.driver],
        ['Resource class', node.resource_class],
        ['Traits', (node.traits || []).join(', ')],
        ['Properties', jsonBlock(node.properties || {})],
        ['Driver info', jsonBlock(node.driver_info || {})],
        ['Instance info', Object.keys(node.instance_info || {}).length ? jsonBlock(node.instance_info) : null],
        ['Owner', node.owner],
        ['Created', time(node.created_at)],
        ['Provision updated', time(node.provision_updated_at)],
      ])),
      h('section', { class: 'card' }, h('h3', null, 'Inventory'), inventorySection(inv)),
      h('section', { class: 'card' }, h('h3', null, 'Ports'), portsSection(ports)),
    );
    await loadHistory();
    if (!document.body.dataset.nodeRendered) performance.mark('node-rendered');
    document.body.dataset.nodeRendered = node.uuid;
  }

  let historyTimer = null;
  ctx.onHello(load);
  function onEvent(name, data) {
    if (buffered) {
      buffered.push([name, data]);
      return;
    }
    if (!node || data.uuid !== node.uuid) return;
    if (name === 'deleted') {
      fill(head, h('p', { class: 'error' }, 'This node was deleted.'));
      return;
    }
    const stateChanged = data.provision_state !== node.provision_state
      || data.target_provision_state !== node.target_provision_state;
    Object.assign(node, {
      name: data.name,
      provision_state: data.provision_state,
      target_provision_state: data.target_provision_state,
      power_state: data.power_state,
      maintenance: data.maintenance,
      last_error: data.last_error,
      progress: data.progress,
      resource_class: data.resource_class,
    });
    drawHead();
    if (stateChanged) {
      clearTimeout(historyTimer);
      historyTimer = setTimeout(loadHistory, 200);
    }
  }
  ctx.onLive(onEvent);
  load();
  return { cleanup: () => clearTimeout(historyTimer) };
}
