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
    await page.close();
  }
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await context.close();
}
process.exit(code);
