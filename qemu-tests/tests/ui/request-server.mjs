// A machine requested from the web console in a lab rack (driven by
// qemu-tests/tests/it/server_create.rs, which runs this inside the lab namespace): log in,
// open "Request a machine", choose the flavor and the image, paste the SSH key and the
// user data, submit, and follow the server page to `active`. Prints `SERVER <uuid>` and
// `ADDRESS <ip>` for the Rust test, which then logs in over SSH. With ACTION=delete it
// instead opens the server page, deletes the server through the confirmation dialog, and
// waits for the page to show it deleting (or deleted, when its undeploy is that fast).
//
// The API is HTTPS with the rack's own CA: chromium accepts exactly the server's key
// (`--ignore-certificate-errors-spki-list` with the SHA-256 of SERVER_CERT's public key),
// nothing else.
//
// Environment: INGOT_URL, CHROMIUM, USER_DATA_DIR, SHOTS, ADMIN_USER, ADMIN_PASSWORD,
// SERVER_CERT, FLAVOR, IMAGE, SERVER_NAME, SSH_KEY_FILE, USER_DATA_FILE, ACTIVE_TIMEOUT_MS,
// ACTION (request | delete).

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL = env('INGOT_URL');
const SHOTS = env('SHOTS');
const T = 30000;

function log(...a) {
  console.log('[ui]', ...a);
}

async function waitText(page, selector, want, timeout = T) {
  try {
    await page.waitForFunction(
      ([s, w]) => document.querySelector(s)?.textContent.includes(w),
      [selector, want],
      { timeout, polling: 500 },
    );
  } catch (e) {
    const got = await page.evaluate((s) => document.querySelector(s)?.textContent, selector);
    throw new Error(`${selector} never showed ${JSON.stringify(want)} (shows ${JSON.stringify(got)})`);
  }
}

async function login(page) {
  await page.goto(`${URL}/ui/`);
  await page.waitForSelector('#login', { timeout: T });
  await page.fill('#login-user', env('ADMIN_USER'));
  await page.fill('#login-password', env('ADMIN_PASSWORD'));
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#rack', { timeout: T });
}

async function request(page) {
  await page.evaluate(() => { window.location.hash = '#/request'; });
  await page.waitForSelector('#request-form');
  await page.selectOption('#req-flavor', env('FLAVOR'));
  await page.selectOption('#req-image', env('IMAGE'));
  await page.fill('#req-name', env('SERVER_NAME'));
  await page.fill('#req-ssh-key', readFileSync(env('SSH_KEY_FILE'), 'utf8'));
  await page.fill('#req-user-data', readFileSync(env('USER_DATA_FILE'), 'utf8'));
  await page.screenshot({ path: `${SHOTS}/lab-request-form.png` });
  await page.click('#req-submit');
  await page.waitForSelector('#server h2');
  const uuid = await page.evaluate(() => window.location.hash.replace('#/server/', ''));
  console.log(`SERVER ${uuid}`);
  log('requested; following the server page to active');
  const started = Date.now();
  const seen = [];
  const timeout = Number(env('ACTIVE_TIMEOUT_MS'));
  for (;;) {
    const state = await page.evaluate(() => document.querySelector('#server-state')?.textContent);
    if (state && seen[seen.length - 1] !== state) {
      seen.push(state);
      log(`server state ${state} after ${Math.round((Date.now() - started) / 1000)} s`);
    }
    if (state === 'active') break;
    if (state === 'error') {
      const why = await page.evaluate(() => document.querySelector('#server .error')?.textContent);
      throw new Error(`the server failed: ${why}`);
    }
    if (Date.now() - started > timeout) throw new Error(`not active after ${timeout} ms (states ${seen})`);
    await page.waitForTimeout(1000);
  }
  await waitText(page, '#server-login', '@');
  await page.screenshot({ path: `${SHOTS}/lab-server-active.png` });
  const hint = await page.evaluate(() => document.querySelector('#server-login code')?.textContent);
  const addr = hint.split('@').pop().trim();
  console.log(`ADDRESS ${addr}`);
}

async function remove(page) {
  await page.evaluate((n) => { window.location.hash = `#/server/${n}`; }, env('SERVER_NAME'));
  await page.waitForSelector('#server-delete');
  await page.click('#server-delete');
  await page.waitForSelector('dialog#confirm');
  await page.click('#confirm-yes');
  // The page shows the server deleting, or (a fast undeploy already reached cleaning) gone.
  try {
    await page.waitForFunction(
      () => document.querySelector('#server-state')?.textContent === 'deleting'
        || document.querySelector('#server-gone') !== null,
      null,
      { timeout: T, polling: 100 },
    );
  } catch (e) {
    const got = await page.evaluate(() => document.querySelector('#server')?.textContent);
    throw new Error(`the server page never showed the server deleting or gone (shows ${JSON.stringify(got)})`);
  }
  log(await page.evaluate(() => (document.querySelector('#server-gone') ? 'deleted' : 'deleting')));
}

const pem = readFileSync(env('SERVER_CERT'));
const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
const pin = createHash('sha256').update(spki).digest('base64');
const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--ignore-certificate-errors-spki-list=${pin}`,
  ],
});
let code = 0;
try {
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  await login(page);
  if (env('ACTION') === 'delete') await remove(page);
  else await request(page);
  log('done');
} catch (e) {
  code = 1;
  console.error(`[ui] FAILED: ${e.stack || e}`);
  for (const [i, p] of context.pages().entries()) {
    await p.screenshot({ path: `${SHOTS}/lab-failure-${i}.png` }).catch(() => {});
  }
} finally {
  await context.close();
}
process.exit(code);
