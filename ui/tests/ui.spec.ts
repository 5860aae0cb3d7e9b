// The web UI in a real browser against a real gateway and PostgreSQL (set up by
// crates/postern/tests/ui.rs): sign-in, API keys used by psql, the live access log, tenancy,
// the simulator, accessibility (axe-core, WCAG 2.2 AA) and CSP, with screenshots of every page.
import { test, expect, type Page, type BrowserContext } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this suite through \`cargo test --test ui\``);
  return value;
}

const ADMIN_TOKEN = setting('UI_TEST_ADMIN_TOKEN');
const TEAM_A_ADMIN_TOKEN = setting('UI_TEST_TEAM_A_ADMIN_TOKEN');
const TEAM_A_READER_TOKEN = setting('UI_TEST_TEAM_A_READER_TOKEN');
const PROXY_PORT = setting('UI_TEST_PROXY_PORT');
const SHOTS = setting('UI_TEST_SCREENSHOTS');
mkdirSync(SHOTS, { recursive: true });

test.describe.configure({ mode: 'serial' });

/** psql through the gateway as alice with `password`: exit status and output. */
function psql(password: string, sql: string): { ok: boolean; output: string } {
  const conninfo = `host=127.0.0.1 port=${PROXY_PORT} user=alice.team-a dbname=orders.team-a password=${password}`;
  const run = spawnSync('psql', [conninfo, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
    env: { ...process.env, PGCONNECT_TIMEOUT: '10' },
    timeout: 30_000,
  });
  return { ok: run.status === 0, output: `${run.stdout}${run.stderr}` };
}

/** Problems the page reports: CSP violations (as the browser logs them, and as events) and
 * uncaught errors. Failed API calls the UI handles (a 404 shown as "not found") are not. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy|CSP violation/i.test(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
  return problems;
}

async function newPage(context: BrowserContext): Promise<{ page: Page; problems: string[] }> {
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) =>
      console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`),
    );
  });
  const page = await context.newPage();
  return { page, problems: watch(page) };
}

/** The UI's progress notes ("Loading events…", "Evaluating…"): none once a page has its data. */
function loading(page: Page) {
  return page.locator('[role="status"]', { hasText: /…$/ });
}

async function signIn(page: Page, token: string) {
  await page.goto('/ui/signin');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Sign in');
  // Kept for the tab (sessionStorage), so the test's page.goto reloads stay signed in.
  await page.getByLabel('Keep me signed in for this tab').check();
  await page.getByLabel('Access token').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await expect(page.getByRole('heading', { level: 1 })).not.toHaveText('Sign in');
}

/** axe-core (WCAG 2.2 AA) in light and dark, a screenshot of each. */
async function audit(page: Page, name: string) {
  await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
  await expect(loading(page)).toHaveCount(0);
  for (const theme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: theme });
    const results = await new AxeBuilder({ page })
      .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'])
      .analyze();
    const violations = results.violations.map(
      (v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
    );
    expect(violations, `axe on ${name} (${theme})`).toEqual([]);
    await page.screenshot({ path: path.join(SHOTS, `${name}-${theme}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

test('every page signs in, passes axe in light and dark, fits a narrow window, breaks no CSP', async ({ browser }) => {
  const context = await browser.newContext();
  const { page, problems } = await newPage(context);
  const started = Date.now();
  await page.goto('/ui/');
  // Not signed in: the app asks for a token first.
  await expect(page).toHaveURL(/\/ui\/signin/);
  const firstPaint = Date.now() - started;
  await audit(page, 'signin');
  await signIn(page, ADMIN_TOKEN);

  const pages: [string, string][] = [
    ['overview', '/ui/'],
    ['namespaces', '/ui/namespaces'],
    ['services', '/ui/namespaces/team-a/services'],
    ['identities', '/ui/namespaces/team-a/identities'],
    ['rolebindings', '/ui/namespaces/team-a/rolebindings'],
    ['targets', '/ui/namespaces/team-a/targets'],
    ['leases', '/ui/namespaces/team-a/leases'],
    ['intents', '/ui/namespaces/team-a/intents'],
    ['plugin', '/ui/namespaces/team-a/plugins/table-window'],
    ['identity', '/ui/namespaces/team-a/identities/alice'],
    ['access-log', '/ui/logs'],
    ['simulator', '/ui/simulator?identity=alice.team-a&service=reports.team-a&statement=DELETE%20FROM%20items'],
    ['not-found', '/ui/no-such-page'],
  ];
  const timings: Record<string, number> = { signinFirstView: firstPaint };
  for (const [name, url] of pages) {
    const start = Date.now();
    await page.goto(url);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await expect(loading(page)).toHaveCount(0);
    timings[name] = Date.now() - start;
    await audit(page, name);
  }
  // The plugin page shows how the plugin does in this gateway.
  await page.goto('/ui/namespaces/team-a/plugins/table-window');
  await expect(page.getByTestId('plugin-runtime')).toContainText('healthy');
  await expect(page.getByTestId('plugin-runtime')).toContainText('policy');

  // A row of the access log opens its session with all of its statements.
  await page.goto('/ui/logs');
  await page.getByTestId('log-row').first().getByRole('link').first().click();
  await expect(page).toHaveURL(/\/ui\/logs\/sessions\//);
  await expect(page.getByTestId('log-row').first()).toBeVisible();
  await audit(page, 'session');

  // Usable on a narrow window: nothing wider than the viewport but the tables' own scroll.
  await page.setViewportSize({ width: 400, height: 800 });
  for (const url of ['/ui/logs', '/ui/namespaces/team-a/services']) {
    await page.goto(url);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, `horizontal overflow at 400px on ${url}`).toBeLessThanOrEqual(0);
  }
  await page.screenshot({ path: path.join(SHOTS, 'access-log-narrow.png'), fullPage: true });
  writeFileSync(path.join(SHOTS, 'timings.json'), JSON.stringify(timings, null, 2));
  expect(problems).toEqual([]);
  await context.close();
});

test('an API key made in the UI logs psql in, its queries stream into the live log, revoked it is refused', async ({ browser }) => {
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  const { page, problems } = await newPage(context);
  await signIn(page, ADMIN_TOKEN);

  await page.goto('/ui/namespaces/team-a/identities/alice');
  await page.getByRole('button', { name: 'Create API key' }).click();
  const secret = page.getByTestId('secret-value');
  await expect(secret).toHaveValue(/^pst_/);
  const key = await secret.inputValue();
  // The secret's label names the new key's id.
  const label = (await page.locator('label', { hasText: /^New API key / }).textContent()) ?? '';
  const keyId = label.replace(/^New API key /, '').trim();
  expect(keyId).not.toBe('');
  await page.getByTestId('secret-value').locator('xpath=..').getByRole('button', { name: /^Copy/ }).click();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(key);

  // Live follow, then a statement through the gateway with the new key.
  const marker = `ui-live-${Date.now()}`;
  const stream = page.waitForResponse((r) => r.url().includes('/api/v1/logs/stream') && r.status() === 200);
  await page.goto('/ui/logs?follow=1');
  await stream;
  const login = psql(key, `SELECT '${marker}' AS marker, count(*) FROM items`);
  expect(login.ok, login.output).toBe(true);
  await expect(page.getByTestId('log-row').filter({ hasText: marker }).first()).toBeVisible();
  await page.screenshot({ path: path.join(SHOTS, 'access-log-live.png') });

  // Revoke it in the UI; the next login with it is refused.
  await page.goto('/ui/namespaces/team-a/identities/alice');
  const row = page.getByTestId('key-row').filter({ hasText: keyId });
  await expect(row).toHaveCount(1);
  await row.getByRole('button', { name: 'Revoke' }).click();
  await row.getByRole('button', { name: 'Yes, revoke' }).click();
  await expect(row).toHaveCount(0);
  const after = psql(key, 'SELECT 1');
  expect(after.ok).toBe(false);
  expect(after.output).toMatch(/authentication failed|28P01/);
  expect(problems).toEqual([]);
  await context.close();
});

test("a namespace admin of team-a sees team-a, not team-b; a reader gets no write buttons", async ({ browser }) => {
  const context = await browser.newContext();
  const { page, problems } = await newPage(context);
  await signIn(page, TEAM_A_ADMIN_TOKEN);
  await page.goto('/ui/namespaces');
  const main = page.getByRole('main');
  await expect(main.getByRole('link', { name: 'team-a', exact: true })).toBeVisible();
  await expect(main.getByRole('link', { name: 'team-b', exact: true })).toHaveCount(0);
  await page.goto('/ui/namespaces/team-b/services');
  await expect(main.getByText(/not found/i).first()).toBeVisible();
  await expect(main.getByText('ledger')).toHaveCount(0);
  await page.goto('/ui/namespaces/team-a/identities/alice');
  await expect(page.getByRole('button', { name: 'Create API key' })).toBeVisible();
  await page.screenshot({ path: path.join(SHOTS, 'team-a-admin.png') });
  await context.close();

  const readerContext = await browser.newContext();
  const reader = await newPage(readerContext);
  await signIn(reader.page, TEAM_A_READER_TOKEN);
  await reader.page.goto('/ui/namespaces/team-a/identities/alice');
  await expect(reader.page.getByRole('heading', { level: 1 })).toContainText('alice');
  await expect(loading(reader.page)).toHaveCount(0);
  await expect(reader.page.getByRole('button', { name: 'Create API key' })).toHaveCount(0);
  await expect(reader.page.getByRole('button', { name: 'Revoke' })).toHaveCount(0);
  expect([...problems, ...reader.problems]).toEqual([]);
  await readerContext.close();
});

test("leases are renewed and revoked, a reconcile is planned and a target's admin checked, from the UI", async ({ browser }) => {
  const context = await browser.newContext();
  const { page, problems } = await newPage(context);
  await signIn(page, ADMIN_TOKEN);
  await page.goto('/ui/namespaces/team-a/leases?role=readonly');
  const rows = page.getByTestId('lease-row');
  await expect(rows).toHaveCount(2);
  const status = page.getByRole('main').locator('p[role="status"]');
  const first = rows.first();
  const renew = first.getByRole('group', { name: /^Renew/ });
  await renew.getByLabel('Increment').selectOption('8h');
  await renew.getByRole('button', { name: 'Renew' }).click();
  await expect(status.filter({ hasText: /renewed until/ })).toBeVisible();
  const revoke = rows.nth(1).getByRole('group', { name: /^Revoke/ });
  await revoke.getByRole('button', { name: 'Revoke' }).click();
  await revoke.getByRole('button', { name: 'Yes, revoke' }).click();
  await expect(status.filter({ hasText: /revoked/ })).toBeVisible();
  await expect(rows).toHaveCount(1);
  // The rest, all at once, after being told how many.
  await page.getByRole('button', { name: 'Revoke all matching…' }).click();
  await expect(page.getByText('This revokes 1 lease')).toBeVisible();
  await audit(page, 'leases-bulk');
  await page.getByRole('button', { name: 'Revoke 1 lease' }).click();
  await expect(page.getByTestId('revoke-result')).toHaveCount(1);
  await page.goto('/ui/namespaces/team-a/leases?role=readonly');
  await expect(page.getByText(/^Loading/)).toHaveCount(0);
  await expect(rows).toHaveCount(0);

  // The reconciler's dry run: apply reconciled alice's Intents, so nothing is left to run.
  await page.goto('/ui/namespaces/team-a/intents');
  await page.getByRole('button', { name: 'Plan (dry run)' }).click();
  await expect(page.getByTestId('reconcile-plan')).toContainText('Actual privileges match the Intents');
  await audit(page, 'reconcile-plan');

  await page.goto('/ui/namespaces/team-a/targets/admin-pg');
  await page.getByRole('button', { name: 'Run check' }).click();
  const checks = page.getByTestId('check-row');
  await expect(checks.first()).toBeVisible();
  await expect(page.getByText(/All \d+ requirements met/)).toBeVisible();
  await audit(page, 'target-check');
  expect(problems).toEqual([]);
  await context.close();
});

test('the simulator explains a denial', async ({ browser }) => {
  const context = await browser.newContext();
  const { page, problems } = await newPage(context);
  await signIn(page, ADMIN_TOKEN);
  await page.goto('/ui/simulator');
  await page.getByLabel('Identity (name.namespace)').fill('alice.team-a');
  await page.getByLabel('Service (name.namespace)').fill('reports.team-a');
  await page.getByLabel('Statement (optional)').fill('DELETE FROM items');
  await page.getByRole('button', { name: /Explain|Simulate|Check/ }).click();
  const result = page.getByTestId('explain-result');
  await expect(result).toContainText('no-deletes');
  await expect(result).toContainText(/denied/i);
  // The question is in the URL: the link reproduces it.
  await expect(page).toHaveURL(/statement=DELETE/);
  // Someone without a binding in team-a is refused at connect, and told why.
  await page.getByLabel('Identity (name.namespace)').fill('bob.team-b');
  await page.getByRole('button', { name: /Explain|Simulate|Check/ }).click();
  await expect(result).toContainText('bob.team-b');
  await expect(result).toContainText(/refused|denied|may not/i);
  expect(problems).toEqual([]);
  await context.close();
});
