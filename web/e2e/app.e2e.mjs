// The web client end to end, in Debian's chromium (headless, through playwright-core), against a real
// backend (web/e2e/run.sh starts it): sign in with the code read from the fake Twilio's ledger, see a
// live price tick, create a target-price alert just past the current price, see it listed, see it
// fire (the fake exchange's random walk crosses it), and its SMS in the alert's history and in the
// notifications, matching what the provider accepted.
//
// Environment: WEB_E2E_BASE_URL, WEB_E2E_LEDGER_URL, CHROMIUM_BIN, WEB_E2E_ARTIFACTS (screenshots).

import { chromium } from 'playwright-core';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';

const base = required('WEB_E2E_BASE_URL');
const ledgerUrl = required('WEB_E2E_LEDGER_URL');
const artifacts = process.env.WEB_E2E_ARTIFACTS ?? '/tmp';
const started = Date.now();

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run web/e2e/run.sh)`);
  return value;
}

function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);
}

/** Polls `probe` until it returns a value other than undefined, or fails after `seconds`. */
async function until(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`gave up after ${seconds}s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function ledger() {
  const response = await fetch(ledgerUrl);
  if (!response.ok) throw new Error(`ledger: HTTP ${response.status}`);
  return response.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN,
  headless: true,
  // Root in CI containers: chromium's sandbox needs user namespaces it may not get.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
let page;
try {
  // Phone first: a phone-sized viewport, English UI.
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    locale: 'en-US',
    timezoneId: 'Asia/Seoul',
  });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });

  // 1. Sign in with a fresh number; the code comes from the fake provider, as a phone would get it.
  const local = `010-${randomInt(1000, 9999)}-${randomInt(1000, 9999)}`;
  const e164 = `+82${local.slice(1).replace(/-/g, '')}`;
  step(`signing in as ${local}`);
  await page.goto(base);
  await page.getByLabel(/Phone number|휴대폰 번호/).waitFor();
  await page.screenshot({ path: join(artifacts, '00-sign-in.png') });
  await page.getByRole('button', { name: 'English' }).click();
  await page.getByLabel('Phone number').fill(local);
  await page.getByRole('button', { name: 'Send code' }).click();
  await page.getByLabel('Code from the SMS').waitFor();
  const code = await until('the sign-in SMS', 30, async () => {
    const entries = (await ledger()).filter((entry) => entry.to === e164);
    return entries.length ? /\b(\d{6})\b/.exec(entries.at(-1).body)?.[1] : undefined;
  });
  await page.screenshot({ path: join(artifacts, '01-code.png') });
  await page.getByLabel('Code from the SMS').fill(code);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('h1.page-title').waitFor();
  step('signed in: markets list shown');

  // The UI follows the user's language preference (a new user's is Korean): set it to English.
  await page.locator('.nav a[href="/settings"]').click();
  await page.getByRole('radio', { name: 'English' }).check();
  await page.locator('form button[type="submit"]').click();
  await page.getByRole('heading', { name: 'Settings', exact: true }).waitFor();
  step('preferences saved: the UI is in English');
  await page.locator('.nav a[href="/"]').click();
  await page.getByRole('heading', { name: 'Markets', exact: true }).waitFor();

  // 2. A live price tick on the market page of KRW-BTC.
  await page.locator('[data-market="KRW-BTC"] a').click();
  await page.locator('.live-open').waitFor({ timeout: 30_000 });
  const livePrice = page.getByTestId('live-price');
  await livePrice.waitFor({ timeout: 30_000 });
  const firstPrice = await livePrice.getAttribute('data-value');
  await page.waitForFunction(
    (initial) => document.querySelector('[data-testid="live-price"]')?.getAttribute('data-value') !== initial,
    firstPrice,
    { timeout: 30_000 },
  );
  const tickedPrice = await livePrice.getAttribute('data-value');
  step(`live tick: ${firstPrice} -> ${tickedPrice}`);
  const shownText = await livePrice.textContent();
  if (shownText !== groupDigits(tickedPrice)) {
    throw new Error(`the price shows as ${shownText}, not exactly ${tickedPrice}`);
  }
  await page.screenshot({ path: join(artifacts, '02-market.png') });

  // 3. Two target-price alerts, one won above and one won below the price: whichever way the random walk
  // goes next, it crosses one of them within moments (a single one above could wait minutes for a walk
  // that went down first).
  const createAlert = async (offset, screenshots) => {
    const current = page.getByTestId('current-price');
    await current.waitFor();
    const now = await current.getAttribute('data-value');
    const target = (BigInt(now.split('.')[0]) + offset).toString();
    const wording = offset > 0n ? 'rises to' : 'falls to';
    step(`creating an alert: KRW-BTC ${wording} ${target} (now ${now})`);
    await page.getByRole('textbox', { name: 'Target price' }).fill(target);
    await page.getByTestId('target-side').waitFor();
    await page.getByRole('radio', { name: /Every time/ }).check();
    await page.getByLabel('Pause between SMS (minutes)').fill('60');
    if (screenshots) await page.screenshot({ path: join(artifacts, '03-form.png'), fullPage: true });
    await page.getByRole('button', { name: 'Create alert' }).click();

    // 4. Listed.
    await page.getByRole('heading', { name: 'Your alerts' }).waitFor();
    // Matched by its target alone: the server words the direction from its own latest price, which
    // may already be past the target the form saw.
    const listed = page.locator('.alert-card', { hasText: ` to ${groupDigits(target)}` });
    await listed.waitFor();
    step(`listed: alert ${await listed.getAttribute('data-alert-id')}`);
    if (screenshots) await page.screenshot({ path: join(artifacts, '04-alerts.png'), fullPage: true });
  };
  await page.getByRole('link', { name: /Create alert here/ }).click();
  await createAlert(1n, true);
  await page.locator('.nav a[href="/"]').click();
  await page.locator('[data-market="KRW-BTC"] a').click();
  await page.getByRole('link', { name: /Create alert here/ }).click();
  await createAlert(-1n, false);

  // 5. One fires: the list learns it from the live stream, and the provider got the SMS.
  const card = page.locator('.alert-card').filter({ has: page.getByText(/Fired 1×/) }).first();
  await card.waitFor({ timeout: 90_000 });
  step('fired (seen live in the list)');
  const sms = await until('the alert SMS at the provider', 30, async () =>
    (await ledger()).find((entry) => entry.to === e164 && !entry.body.includes(code)),
  );
  step(`SMS at the provider: ${sms.body.replace(/\n/g, ' / ')}`);

  // 6. Its history: the firing, its price, the SMS outcome.
  await card.getByRole('button', { name: 'History' }).click();
  const firing = page.getByTestId('firing').first();
  await firing.waitFor({ timeout: 30_000 });
  await until('the SMS outcome in the history', 45, async () => {
    const badge = await firing.locator('.badge').textContent();
    return badge === 'Sent' || badge === 'Delivered' ? badge : undefined;
  });
  const firedText = await firing.textContent();
  if (!firedText.includes('KRW-BTC')) throw new Error(`the firing does not show its market: ${firedText}`);
  step('history shows the firing and its SMS');
  await page.screenshot({ path: join(artifacts, '05-history.png'), fullPage: true });

  // 7. The notifications list shows the same text the provider accepted.
  await page.getByRole('link', { name: 'SMS', exact: true }).click();
  await page.getByRole('heading', { name: 'SMS history' }).waitFor();
  await until('the SMS in the notifications', 30, async () => {
    const texts = await page.locator('[data-testid="notification"] .sms-bubble').allTextContents();
    return texts.some((text) => text === sms.body) || undefined;
  });
  step('notifications show the SMS');
  await page.screenshot({ path: join(artifacts, '06-notifications.png'), fullPage: true });

  // The same session on a desktop-sized window (a look for people; nothing asserted).
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.locator('.nav a[href="/"]').click();
  await page.locator('[data-market="KRW-BTC"] a').click();
  await page.getByTestId('live-price').waitFor();
  await page.screenshot({ path: join(artifacts, '07-desktop-market.png') });

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join('\n')}`);
  step('passed');
} catch (error) {
  if (page) await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`web e2e FAILED: ${error.stack ?? error}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}

function groupDigits(text) {
  const [integer, fraction] = text.split('.');
  return integer.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (fraction ? `.${fraction}` : '');
}
