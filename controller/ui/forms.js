// Discovered machines waiting for BMC credentials, requesting a machine by flavor, and
// following the server that request made.

import { api } from './api.js';
import {
  badge, fill, h, kvTable, progressBar,
} from './util.js';

// The driver_info keys of each BMC type's address, user and password.
const BMC_KEYS = {
  ipmi: ['ipmi_address', 'ipmi_username', 'ipmi_password'],
  redfish: ['redfish_address', 'redfish_username', 'redfish_password'],
};

// A node discovery enrolled that still has no BMC: enroll/manageable, no *_address and no
// QMP socket in driver_info, and not the fake type (which needs none).
export function waitsForBmc(n) {
  if (!['enroll', 'manageable'].includes(n.provision_state)) return false;
  if (n.driver === 'fake-hardware') return false;
  const keys = Object.keys(n.driver_info || {});
  return !keys.some((k) => k.endsWith('_address') || k === 'qemu_qmp_socket');
}

const DISCOVERED_FIELDS = 'uuid,name,driver,driver_info,provision_state,properties,last_error';

function bmcForm(ctx, n, drivers, onDone) {
  const driver = h('select', { class: 'bmc-driver', name: 'driver' },
    drivers.map((d) => h('option', { value: d, selected: d === 'ipmi' }, d)));
  const address = h('input', { class: 'bmc-address', name: 'address', placeholder: '10.0.0.5 or https://10.0.0.5' });
  const user = h('input', { class: 'bmc-user', name: 'username', autocomplete: 'off' });
  const password = h('input', { class: 'bmc-password', name: 'password', type: 'password', autocomplete: 'new-password' });
  const bmcFields = h('div', { class: 'bmc-fields' },
    h('label', null, 'BMC address', address),
    h('label', null, 'BMC user', user),
    h('label', null, 'BMC password', password));
  const sync = () => {
    bmcFields.hidden = !BMC_KEYS[driver.value];
  };
  driver.addEventListener('change', sync);
  sync();
  const p = n.properties || {};
  const form = h(
    'form',
    { class: 'card form discovered', dataset: { uuid: n.uuid } },
    h('h3', null, h('a', { href: `#/node/${n.uuid}` }, n.name || n.uuid), ' ', badge(n.provision_state)),
    h('p', { class: 'muted' }, `${p.cpus || '?'} CPUs, ${p.memory_mb || '?'} MiB, ${p.local_gb || '?'} GiB, ${p.cpu_arch || ''}`),
    h('label', null, 'Driver', driver),
    bmcFields,
    h('div', { class: 'form-buttons' },
      h('button', { class: 'btn btn-primary bmc-submit', type: 'submit' },
        n.provision_state === 'enroll' ? 'Save and manage' : 'Save')),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const keys = BMC_KEYS[driver.value];
    const patch = [{ op: 'replace', path: '/driver', value: driver.value }];
    if (keys) {
      const info = {};
      [address.value, user.value, password.value].forEach((v, i) => {
        if (v.trim()) info[keys[i]] = v.trim();
      });
      patch.push({ op: 'add', path: '/driver_info', value: info });
    }
    const base = `/v1/nodes/${encodeURIComponent(n.uuid)}`;
    const ok = await ctx.run(`${n.name || n.uuid}`, async () => {
      await api('PATCH', base, patch);
      if (n.provision_state === 'enroll') await api('PUT', `${base}/states/provision`, { target: 'manage' });
      return true;
    });
    password.value = '';
    if (ok) onDone();
  });
  return form;
}

export function renderDiscovered(main, ctx) {
  const list = h('div', { id: 'discovered-list', class: 'grid' });
  fill(
    main,
    h('h2', null, 'Discovered machines waiting for BMC credentials'),
    h('p', { class: 'muted' }, 'Machines that booted the agent and enrolled themselves. Give each its BMC to manage it.'),
    list,
  );
  let drivers = ['ipmi', 'redfish', 'manual'];
  const shown = new Set();

  function add(n) {
    if (shown.has(n.uuid) || !waitsForBmc(n)) return;
    shown.add(n.uuid);
    const placeholder = list.querySelector('.empty');
    if (placeholder) placeholder.remove();
    if (!ctx.session.canWrite) {
      list.append(h('div', { class: 'card discovered', dataset: { uuid: n.uuid } },
        h('h3', null, h('a', { href: `#/node/${n.uuid}` }, n.name || n.uuid), ' ', badge(n.provision_state))));
      return;
    }
    list.append(bmcForm(ctx, n, drivers, () => {}));
  }

  async function load() {
    shown.clear();
    list.replaceChildren(h('p', { class: 'muted empty' }, 'None waiting.'));
    try {
      const d = await api('GET', '/v1/drivers');
      drivers = (d.drivers || []).map((x) => x.name).sort((a, b) => (a === 'ipmi' ? -1 : b === 'ipmi' ? 1 : a.localeCompare(b)));
    } catch {
      // keep the defaults
    }
    for (const state of ['enroll', 'manageable']) {
      let marker = null;
      for (let pages = 0; pages < 20; pages += 1) {
        const q = new URLSearchParams({ provision_state: state, fields: DISCOVERED_FIELDS, limit: '500' });
        if (marker) q.set('marker', marker);
        let body;
        try {
          body = await api('GET', `/v1/nodes?${q}`);
        } catch (e) {
          ctx.error(e);
          return;
        }
        body.nodes.forEach(add);
        if (!body.next || body.nodes.length === 0) break;
        marker = body.nodes[body.nodes.length - 1].uuid;
      }
    }
  }

  ctx.onHello(load);
  ctx.onLive(async (name, data) => {
    if (name === 'deleted' || (name === 'node' && !['enroll', 'manageable'].includes(data.provision_state))) {
      const el = list.querySelector(`[data-uuid="${data.uuid}"]`);
      if (el) el.remove();
      shown.delete(data.uuid);
      return;
    }
    if (name === 'node' && shown.has(data.uuid)) {
      const st = list.querySelector(`[data-uuid="${data.uuid}"] .st`);
      if (st) st.replaceWith(badge(data.provision_state));
      return;
    }
    if (name === 'node' && data.discovered) {
      try {
        add(await api('GET', `/v1/nodes/${data.uuid}?fields=${DISCOVERED_FIELDS}`));
      } catch {
        // gone meanwhile
      }
    }
  });
  load();
  return null;
}

function absent(e) {
  return e && e.status === 404;
}

const NO_SERVERS = 'This controller has no server API yet (GET /v1/ingot/flavors answered 404): requesting a machine by flavor is not available.';

export function renderRequest(main, ctx) {
  const slot = h('div', { id: 'request-slot' }, h('p', { class: 'muted' }, 'Loading flavors…'));
  fill(main, h('h2', null, 'Request a machine'), slot);
  (async () => {
    let flavors;
    let images = [];
    try {
      flavors = (await api('GET', '/v1/ingot/flavors')).flavors || [];
    } catch (e) {
      fill(slot, h('p', { class: absent(e) ? 'notice' : 'error', id: 'request-absent' }, absent(e) ? NO_SERVERS : e.message));
      return;
    }
    try {
      images = (await api('GET', '/v1/ingot/images')).images || [];
    } catch (e) {
      if (!absent(e)) ctx.error(e);
    }
    if (!ctx.session.canWrite) {
      fill(slot, h('p', { class: 'muted' }, 'Your role only reads: you cannot request machines.'));
      return;
    }
    const flavor = h('select', { id: 'req-flavor', required: true }, flavors.map((f) => h('option', { value: f.name },
      `${f.name} (${f.cpus} CPU, ${f.memory_mb} MiB, ${f.local_gb} GiB, ${f.resource_class})`)));
    const image = h('select', { id: 'req-image', required: true }, images.map((i) => h('option', { value: i.name }, i.name)));
    const name = h('input', { id: 'req-name', placeholder: 'optional' });
    const key = h('textarea', { id: 'req-ssh-key', rows: 2, required: true, placeholder: 'ssh-ed25519 AAAA…' });
    const userData = h('textarea', { id: 'req-user-data', rows: 4, placeholder: '#cloud-config (optional)' });
    const form = h('form', { class: 'card form', id: 'request-form' },
      h('label', null, 'Flavor', flavor),
      h('label', null, 'Image', image),
      h('label', null, 'Name', name),
      h('label', null, 'SSH public key', key),
      h('label', null, 'User data', userData),
      h('div', { class: 'form-buttons' }, h('button', { class: 'btn btn-primary', type: 'submit', id: 'req-submit' }, 'Request')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { flavor: flavor.value, image: image.value, ssh_keys: [key.value.trim()] };
      if (name.value.trim()) body.name = name.value.trim();
      if (userData.value.trim()) body.user_data = userData.value;
      const server = await ctx.run('Request', () => api('POST', '/v1/ingot/servers', body));
      if (server && server.uuid) ctx.navigate(`#/server/${server.uuid}`);
    });
    fill(slot, form);
  })();
  return null;
}

export function renderServer(main, ctx, uuid) {
  const card = h('section', { class: 'card', id: 'server' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(main, h('p', null, h('a', { href: '#/request' }, '← Request a machine')), card);
  let server = null;
  let progress = null;
  let timer = null;
  let stopped = false;
  let deleted = false;

  function draw() {
    const s = server;
    const addresses = s.addresses || [];
    const done = s.state === 'active' || s.state === 'error';
    fill(
      card,
      h('h2', null, s.name || s.uuid),
      h('p', null, h('span', { id: 'server-state', class: `st ${s.state === 'active' ? 'st-good' : s.state === 'error' ? 'st-bad' : 'st-busy'}` }, s.state),
        s.provision_state ? h('span', { class: 'muted' }, ` node: ${s.provision_state}`) : null),
      done ? null : h('div', { id: 'server-progress' }, progressBar(progress, s.provision_state)),
      s.last_error ? h('p', { class: 'error' }, s.last_error) : null,
      kvTable([
        ['Flavor', s.flavor],
        ['Image', s.image],
        ['Node', s.node_uuid ? h('a', { href: `#/node/${s.node_uuid}` }, s.node_uuid) : 'not chosen yet'],
        ['Addresses', addresses.join(', ')],
      ]),
      s.state === 'active' && addresses.length
        ? h('p', { class: 'login-hint', id: 'server-login' }, 'Log in: ', h('code', null, `ssh <image user>@${addresses[0]}`))
        : null,
      ctx.session.canWrite && s.state !== 'deleting'
        ? h('div', { class: 'actions' }, h('button', {
          class: 'btn btn-danger',
          id: 'server-delete',
          onclick: async () => {
            if (!(await ctx.confirm('Delete this server? Its machine is undeployed and wiped.', s.name || s.uuid))) return;
            const done = await ctx.run('Delete', () => api('DELETE', `/v1/ingot/servers/${encodeURIComponent(s.uuid)}`));
            // Accepted: the server is deleting now, even if its node reaches cleaning (and
            // the server disappears) before the next read.
            if (done !== undefined && server) {
              deleted = true;
              server.state = 'deleting';
              draw();
            }
            load();
          },
        }, 'Delete'))
        : null,
    );
  }

  async function load() {
    try {
      server = await api('GET', `/v1/ingot/servers/${encodeURIComponent(uuid)}`);
    } catch (e) {
      if (absent(e) && deleted) {
        // Its undeploy reached cleaning: the server is gone. Node events no longer redraw it.
        server = null;
        fill(card, h('p', { class: 'notice', id: 'server-gone' }, `Server ${uuid} is deleted; its machine is being cleaned.`));
        return;
      }
      fill(card, h('p', { class: absent(e) ? 'notice' : 'error' }, absent(e) ? `Server ${uuid} was not found (or this controller has no server API).` : e.message));
      return;
    }
    draw();
    // The server's own state is not on the node stream: follow it slowly until it rests.
    clearTimeout(timer);
    if (!stopped && !['active', 'error'].includes(server.state)) timer = setTimeout(load, 3000);
  }

  ctx.onHello(load);
  ctx.onLive((name, data) => {
    if (!server || name !== 'node' || data.uuid !== server.node_uuid) return;
    progress = data.progress;
    server.provision_state = data.provision_state;
    draw();
    if (['active', 'deploy failed'].includes(data.provision_state)) load();
  });
  load();
  return {
    cleanup: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
