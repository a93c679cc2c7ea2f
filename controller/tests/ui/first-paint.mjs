// Time to first paint of the rack view (ms since navigation start), three loads, printed
// as `FIRST_PAINT_MS <rack painted> (rows <n>, first contentful paint <ms>)`.
// Environment: INGOT_URL (a noauth `ingot serve`), CHROMIUM, USER_DATA_DIR.

import { chromium } from 'playwright-core';

const context = await chromium.launchPersistentContext(process.env.USER_DATA_DIR, {
  executablePath: process.env.CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let code = 0;
try {
  for (let i = 0; i < 3; i += 1) {
    const page = await context.newPage();
    await page.goto(`${process.env.INGOT_URL}/ui/#/rack`);
    await page.waitForFunction(() => document.body.dataset.rackPainted, null, { timeout: 30000 });
    const m = await page.evaluate(() => ({
      painted: Number(document.body.dataset.rackPainted),
      rows: document.querySelectorAll('#rack-rows tr').length,
      fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
    }));
    if (m.rows === 0) throw new Error('no rows');
    console.log(`FIRST_PAINT_MS ${m.painted} (rows ${m.rows}, first contentful paint ${Math.round(m.fcp)})`);
    if (i === 2) {
      // The searches and filter the rack sends, timed from the page.
      const t = await page.evaluate(async () => {
        const time = async (q) => {
          const t0 = performance.now();
          const r = await fetch(`/v1/nodes?fields=uuid,name,provision_state&limit=50&${q}`, {
            headers: { 'X-OpenStack-Ironic-API-Version': 'latest' },
          });
          const n = (await r.json()).nodes.length;
          return `${q}: ${Math.round(performance.now() - t0)} ms (${n} rows)`;
        };
        return [
          await time('ingot_search=rack-0999'),
          await time('ingot_search=52:54:01:00:27'),
          await time('ingot_search=SN00004711'),
          await time('provision_state=deploy%20failed'),
        ];
      });
      for (const line of t) console.log(`API ${line}`);
    }
    await page.close();
  }
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await context.close();
}
process.exit(code);
