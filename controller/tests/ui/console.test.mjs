// The web console in headless chromium against a real `ingot serve` (started by
// controller/tests/ui_browser.rs, which also plays the agent of a discovered machine when
// this script prints `STEP discover`). Exits non-zero on the first failed expectation.
//
// Environment: INGOT_URL, CHROMIUM, USER_DATA_DIR, SHOTS (screenshot dir), ADMIN_USER,
// ADMIN_PASSWORD, READER_USER, READER_PASSWORD.

import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL = env('INGOT_URL');
const SHOTS = env('SHOTS');
const ADMIN = [env('ADMIN_USER'), env('ADMIN_PASSWORD')];
const READER = [env('READER_USER'), env('READER_PASSWORD')];
const T = 20000;

function log(...a) {
  console.log('[ui]', ...a);
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

// The API from this script (not the page), as the admin.
async function api(method, path, body) {
  const headers = {
    Authorization: `Basic ${Buffer.from(`${ADMIN[0]}:${ADMIN[1]}`).toString('base64')}`,
    'X-OpenStack-Ironic-API-Version': 'latest',
  };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(`${URL}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function waitText(page, selector, want, timeout = T) {
  try {
    await page.waitForFunction(
      ([s, w]) => {
        const el = document.querySelector(s);
        return el && el.textContent.includes(w);
      },
      [selector, want],
      { timeout },
    );
  } catch (e) {
    const got = await page.evaluate((s) => document.querySelector(s)?.textContent, selector);
    throw new Error(`${selector} never showed ${JSON.stringify(want)} (shows ${JSON.stringify(got)})`);
  }
}

// Moves the page to `hash` (a same-document navigation) and waits for the view to be drawn.
async function go(page, hash) {
  await page.evaluate((h) => {
    window.location.hash = h;
  }, hash);
  await page.waitForFunction((h) => document.body.dataset.route === h, hash);
}

// Waits until the node page shows `state` as the provision state (not as a target).
async function waitState(page, state, timeout = T) {
  try {
    await page.waitForFunction(
      (w) => document.querySelector('#node-state .st')?.dataset.state === w,
      state,
      { timeout },
    );
  } catch (e) {
    const got = await page.evaluate(() => document.querySelector('#node-state')?.textContent);
    throw new Error(`the node never reached ${state} (shows ${JSON.stringify(got)})`);
  }
}

async function login(page, [user, password]) {
  await page.goto(`${URL}/ui/`);
  await page.waitForSelector('#login', { timeout: T });
  await page.fill('#login-user', user);
  await page.fill('#login-password', 'wrong password');
  await page.click('#login button[type=submit]');
  await waitText(page, '#login-error', 'Wrong user or password');
  await page.fill('#login-password', password);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#rack', { timeout: T });
  await waitText(page, '#live', 'live');
}

// Records every provision state the node header shows (proof of live updates).
async function recordStates(page) {
  await page.evaluate(() => {
    window.seenStates = [];
    const note = () => {
      const s = document.querySelector('#node-state .st');
      const v = s && s.dataset.state;
      if (v && window.seenStates[window.seenStates.length - 1] !== v) window.seenStates.push(v);
    };
    note();
    new MutationObserver(note).observe(document.getElementById('node-head'), { childList: true, subtree: true });
  });
}

const errors = [];

async function run(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  await page.setViewportSize({ width: 1280, height: 800 });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });

  log('login as the admin');
  await login(page, ADMIN);
  await page.evaluate(() => {
    window.noReload = true;
  });

  log('nodes created through the API appear without a reload');
  const created = [];
  for (const name of ['ui-n1', 'ui-n2', 'ui-n3']) {
    const r = await api('POST', '/v1/nodes', {
      driver: 'fake-hardware', name, resource_class: 'baremetal',
      properties: { cpus: 8, memory_mb: 16384, local_gb: 100, cpu_arch: 'x86_64' },
    });
    assert(r.status === 201, `create ${name}: ${r.status}`);
    created.push(r.body.uuid);
  }
  for (const uuid of created) await page.waitForSelector(`#rack-rows tr[data-uuid="${uuid}"]`);
  assert(await page.evaluate(() => window.noReload === true), 'the page was not reloaded');

  log('search by name');
  await page.fill('#search', 'ui-n2');
  await page.waitForFunction(() => document.querySelectorAll('#rack-rows tr').length === 1);
  await waitText(page, '#rack-rows', 'ui-n2');
  await page.fill('#search', '');
  await page.waitForFunction(() => document.querySelectorAll('#rack-rows tr').length >= 3);

  log('a machine discovers itself while the page is open');
  console.log('STEP discover');
  await page.waitForFunction(() => document.querySelector('#rack-rows')?.textContent.includes('node-ui-disc-1'), null, { timeout: T });
  const disc = (await api('GET', '/v1/nodes/node-ui-disc-1')).body;
  assert(disc && disc.uuid, 'discovered node readable');
  for (const [needle, why] of [['c0:ff:ee', 'MAC'], ['DSK-UI-7781', 'disk serial'], ['UI-DISC', 'system serial or name']]) {
    await page.fill('#search', needle);
    await page.waitForFunction(
      (u) => {
        const rows = document.querySelectorAll('#rack-rows tr');
        return rows.length === 1 && rows[0].dataset.uuid === u;
      },
      disc.uuid,
    ).catch(() => {
      throw new Error(`search by ${why} (${needle}) did not find exactly the discovered node`);
    });
  }
  await page.fill('#search', '');

  log('filter by provision state');
  await page.selectOption('#filter-state', 'enroll');
  await page.waitForFunction(() => [...document.querySelectorAll('#rack-rows tr')].every((r) => r.dataset.state === 'enroll'));
  await page.selectOption('#filter-state', '');

  log('the discovered machine waits for BMC credentials; given a driver, it is managed');
  await go(page, `#/discovered`);
  const card = `form.discovered[data-uuid="${disc.uuid}"]`;
  await page.waitForSelector(card);
  await page.selectOption(`${card} .bmc-driver`, 'ipmi');
  assert(await page.isVisible(`${card} .bmc-password`), 'BMC fields shown for ipmi');
  await page.selectOption(`${card} .bmc-driver`, 'manual');
  assert(!(await page.isVisible(`${card} .bmc-password`)), 'no BMC fields for manual');
  await page.selectOption(`${card} .bmc-driver`, 'ipmi');
  await page.fill(`${card} .bmc-address`, '10.0.0.5');
  await page.screenshot({ path: `${SHOTS}/discovered.png` });
  await page.selectOption(`${card} .bmc-driver`, 'manual');
  await page.click(`${card} .bmc-submit`);
  await waitText(page, '#banner', 'accepted');

  log('provide (confirmed), watched live through cleaning to available');
  await go(page, `#/node/${disc.uuid}`);
  await waitState(page, 'manageable');
  await recordStates(page);
  await page.click('#act-provide');
  await page.waitForSelector('dialog#confirm');
  await page.click('#confirm-yes');
  await waitState(page, 'available', 30000);
  let seen = await page.evaluate(() => window.seenStates);
  assert(seen.some((s) => s === 'cleaning' || s === 'clean wait'), `cleaning seen live: ${seen}`);

  log('deploy with the progress bar');
  await page.click('#act-deploy');
  await page.waitForSelector('#deploy-image');
  if (await page.$eval('#deploy-image', (e) => e.tagName === 'SELECT')) {
    // The image store has images: the form offers them (ingot://NAME, no checksum).
    await page.selectOption('#deploy-image', 'ingot://debian-12');
  } else {
    await page.fill('#deploy-image', 'http://127.0.0.1:9/os.raw.zst');
    await page.fill('#deploy-checksum', 'ab'.repeat(32));
  }
  await page.click('#deploy-submit');
  await page.waitForFunction(() => /\d+%.*MB\/s.*ETA/.test(document.querySelector('#node-progress .progress-text')?.textContent || ''), null, { timeout: 30000 });
  const progressText = await page.textContent('#node-progress .progress-text');
  log(`progress shown: ${progressText}`);
  await page.waitForFunction(() => {
    const p = document.querySelector('#node-progress .progress-text')?.textContent || '';
    const m = /(\d+)%/.exec(p);
    return m && Number(m[1]) >= 20;
  }, null, { timeout: 30000 });
  await page.screenshot({ path: `${SHOTS}/node.png` });
  seen = await page.evaluate(() => window.seenStates);
  assert(seen.includes('deploying') || seen.includes('wait call-back'), `deploy seen live: ${seen}`);

  log('the rack shows the same progress in the node\'s row');
  await go(page, `#/rack`);
  await page.waitForFunction(
    (u) => /\d+%.*MB\/s/.test(document.querySelector(`#rack-rows tr[data-uuid="${u}"] .progress-text`)?.textContent || ''),
    disc.uuid,
  );
  await page.screenshot({ path: `${SHOTS}/rack.png` });

  await go(page, `#/node/${disc.uuid}`);
  await page.waitForSelector('#node-state .st');
  await recordStates(page);
  await waitState(page, 'active', 30000);
  seen = await page.evaluate(() => window.seenStates);
  assert(seen.includes('active'), `active seen: ${seen}`);
  await page.waitForSelector('#deploy-timeline rect');
  await waitText(page, '#nics', 'leaf-07 · Ethernet12 · VLAN 100');
  await waitText(page, '#history', '-> active');
  await page.screenshot({ path: `${SHOTS}/node-full.png`, fullPage: true });

  log('undeploy asks first; cancelled it does nothing, confirmed it cleans');
  await page.click('#act-undeploy');
  await page.click('#confirm-no');
  await page.waitForTimeout(500);
  await waitState(page, 'active');
  await page.click('#act-undeploy');
  await page.click('#confirm-yes');
  await waitState(page, 'available', 30000);

  log('power and maintenance of a fake node');
  await go(page, `#/node/${created[0]}`);
  await page.click('#act-power-on');
  await waitText(page, '#node-power', 'power on');
  await page.click('#act-power-off');
  await page.click('#confirm-yes');
  await waitText(page, '#node-power', 'power off');
  await page.click('#act-maint-on');
  await waitText(page, '#node-head', 'maintenance');
  await page.click('#act-maint-off');
  await page.waitForSelector('#act-maint-on');
  await page.waitForSelector('#inventory, #no-inventory');

  log('requesting a machine by flavor');
  const flavors = await api('GET', '/v1/ingot/flavors');
  await go(page, `#/request`);
  if (flavors.status === 404) {
    await waitText(page, '#request-absent', '404');
    await page.screenshot({ path: `${SHOTS}/request-absent.png` });
    console.log('SKIP servers: GET /v1/ingot/flavors answered 404');
  } else {
    await requestServer(page, flavors.body.flavors || []);
  }

  log('a reader sees no actions and gets a clear 403 when forcing a write');
  const reader = await context.newPage();
  reader.setDefaultTimeout(T);
  reader.on('pageerror', (e) => errors.push(`reader page error: ${e.message}`));
  await reader.setViewportSize({ width: 1280, height: 800 });
  await login(reader, READER);
  await waitText(reader, '#who', 'reader');
  await go(reader, `#/node/${created[1]}`);
  await waitText(reader, '#node-head', 'ui-n2');
  assert((await reader.$$('#actions, [id^="act-"]')).length === 0, 'no action buttons for a reader');
  await go(reader, `#/discovered`);
  await reader.waitForTimeout(300);
  assert((await reader.$$('form.discovered')).length === 0, 'no BMC forms for a reader');
  await go(reader, `#/node/${created[1]}`);
  await waitText(reader, '#node-head', 'ui-n2');
  await reader.evaluate(async (uuid) => {
    const app = await import('/ui/app.js');
    const node = await import('/ui/node.js');
    await app.runAction('Power on', () => node.act(null, uuid, { power: 'power on' }));
  }, created[1]);
  await waitText(reader, '#banner', 'Forbidden (403)');
  await waitText(reader, '#banner', 'reader role only reads');

  log('at phone width (390 px) the rack is usable');
  await reader.setViewportSize({ width: 390, height: 844 });
  await go(reader, `#/rack`);
  await reader.waitForSelector(`#rack-rows tr[data-uuid="${created[0]}"]`);
  const phone = await reader.evaluate(() => {
    const td = document.querySelector('#rack-rows tr td.c-state');
    const link = document.querySelector('#rack-rows a.node-link');
    const r = link.getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      display: getComputedStyle(td).display,
      label: getComputedStyle(td, '::before').content,
      linkInView: r.left >= 0 && r.right <= 390 && r.height > 0,
      searchWidth: document.querySelector('#search').getBoundingClientRect().width,
    };
  });
  log(`phone layout: ${JSON.stringify(phone)}`);
  assert(phone.scrollWidth <= 390, `no horizontal scrolling at 390 px (${phone.scrollWidth})`);
  assert(phone.display === 'flex' && phone.label.includes('State'), 'rows are labelled cards');
  assert(phone.linkInView && phone.searchWidth > 150, 'links and search usable');
  await reader.screenshot({ path: `${SHOTS}/rack-390.png` });
  await reader.click(`#rack-rows tr[data-uuid="${created[0]}"] a.node-link`);
  await waitText(reader, '#node-head', 'ui-n1');

  assert(errors.length === 0, `no page errors: ${errors.join('; ')}`);
}

// The flavor form and the server it makes, followed to active (needs the server API).
async function requestServer(page, flavors) {
  assert(flavors.length > 0, 'the server API lists at least one flavor');
  const f = flavors[0];
  const node = await api('POST', '/v1/nodes', {
    driver: 'fake-hardware', name: 'ui-flavor-1', resource_class: f.resource_class,
    properties: { cpus: f.cpus, memory_mb: f.memory_mb, local_gb: f.local_gb, cpu_arch: f.cpu_arch },
  });
  assert(node.status === 201, `flavor node: ${node.status}`);
  // A fixed DHCP address (a port reservation) is what the server shows to log in at.
  const port = await api('POST', '/v1/ports', {
    address: '52:54:00:f1:a0:01', node_uuid: node.body.uuid, extra: { dhcp_address: '192.0.2.50' },
  });
  assert(port.status === 201, `flavor node's port: ${port.status}`);
  for (const target of ['manage', 'provide']) {
    await api('PUT', `/v1/nodes/${node.body.uuid}/states/provision`, { target });
    for (let i = 0; i < 100; i += 1) {
      const n = (await api('GET', `/v1/nodes/${node.body.uuid}`)).body;
      if (n.provision_state === (target === 'manage' ? 'manageable' : 'available')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  // Only a node whose power state is known is allocated (Ironic's rule).
  await api('PUT', `/v1/nodes/${node.body.uuid}/states/power`, { target: 'power off' });
  for (let i = 0; i < 100; i += 1) {
    if ((await api('GET', `/v1/nodes/${node.body.uuid}`)).body.power_state === 'power off') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.waitForSelector('#request-form');
  await page.selectOption('#req-flavor', f.name);
  await page.fill('#req-name', 'ui-server-1');
  await page.fill('#req-ssh-key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ ui@test');
  await page.click('#req-submit');
  await page.waitForSelector('#server');
  await waitText(page, '#server-state', 'active', 60000);
  await waitText(page, '#server-login', '192.0.2.50');
  // Delete: fake hardware undeploys at once, so the server is gone by the page's next read;
  // the page says so and later node events (its cleaning) do not bring back the old server.
  await page.click('#server-delete');
  await page.waitForSelector('dialog#confirm');
  await page.click('#confirm-yes');
  await page.waitForSelector('#server-gone', { timeout: 30000 });
  for (let i = 0; i < 100; i += 1) {
    if ((await api('GET', `/v1/nodes/${node.body.uuid}`)).body.provision_state === 'available') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.waitForTimeout(500);
  assert(await page.$('#server-gone'), 'the deleted server page was redrawn by a node event');
  assert(!(await page.$('#server-state')), 'the deleted server still shows a state');
}

const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  viewport: { width: 1280, height: 800 },
  deviceScaleFactor: 1,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let code = 0;
try {
  await run(context);
  log('all console checks passed');
} catch (e) {
  code = 1;
  console.error(`[ui] FAILED: ${e.stack || e}`);
  for (const err of errors) console.error(`[ui] ${err}`);
  for (const [i, p] of context.pages().entries()) {
    const where = await p.evaluate(() => `${location.href} route=${document.body.dataset.route}`).catch(() => '?');
    console.error(`[ui] page ${i}: ${where}`);
    await p.screenshot({ path: `${SHOTS}/failure-${i}.png` }).catch(() => {});
  }
} finally {
  await context.close();
}
process.exit(code);
