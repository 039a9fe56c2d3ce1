// The web console in a real browser: Debian's chromium, driven by
// playwright-core, against a real `mandate serve`. No mocks.
//
// Started by `cargo test -p mandate --test console`
// (crates/mandate/tests/console.rs), which runs the server with the pack in
// crates/mandate/tests/data/console-pack and passes:
//
//   MANDATE_URL               the server, http://127.0.0.1:PORT
//   MANDATE_APPROVER_TOKEN    a configured approver's token
//   MANDATE_APPROVER_NAME     that approver's name
//   MANDATE_TASK_ID           an open task with one delegation
//   MANDATE_TASK_CREDENTIAL   that task's root credential
//   MANDATE_TAMPERED_INDEX    a receipt altered in the ledger after it was
//                             signed (a deny made to read allow)
//   MANDATE_SHADOW_PACK       the name of the shadow pack the server runs
//                             (the console's pack, reading no invoices)
//   MANDATE_SCREENSHOT_DIR    optional: save console-queue.png,
//                             console-receipts.png, console-shadow.png and
//                             console-phone.png there
//
// This file plays the agent with fetch, and the approver in the browser.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
// The browser itself, not Debian's /usr/bin/chromium launcher script (see
// crates/mandate/tests/console.rs).
const CHROMIUM = '/usr/lib/chromium/chromium';
const SETUP = 'run the set-up command from the README (it installs chromium and runs `npm ci --prefix tests/ui`)';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const env = (name) => process.env[name] ?? '';
const BASE = env('MANDATE_URL').replace(/\/$/, '');
const TOKEN = env('MANDATE_APPROVER_TOKEN');
const APPROVER = env('MANDATE_APPROVER_NAME');
const TASK_ID = env('MANDATE_TASK_ID');
const TASK_CREDENTIAL = env('MANDATE_TASK_CREDENTIAL');
const TAMPERED_INDEX = env('MANDATE_TAMPERED_INDEX');
const SHADOW_PACK = env('MANDATE_SHADOW_PACK');
const ROOT_AGENT = 'spiffe://example.org/agent/planner';
const SCREENSHOTS = env('MANDATE_SCREENSHOT_DIR');

const AGENT = 'spiffe://example.org/agent/billing';
const PERSON = 'alice@example.com';

let browser;

/** What is missing to run these tests, and how to get it; empty when nothing is. */
function missing() {
  const problems = [];
  const tools = [];
  if (!existsSync(CHROMIUM)) tools.push(`${CHROMIUM} is missing`);
  if (!existsSync(join(HERE, 'node_modules', 'playwright-core'))) {
    tools.push(`${join(HERE, 'node_modules')} has no playwright-core`);
  }
  if (tools.length > 0) problems.push(`${tools.join(' and ')}: ${SETUP}`);
  const unset = ['MANDATE_URL', 'MANDATE_APPROVER_TOKEN', 'MANDATE_APPROVER_NAME'].filter((name) => !env(name));
  if (unset.length > 0) {
    problems.push(`${unset.join(', ')} not set: run these tests through \`cargo test -p mandate --test console\`, which starts the server they need`);
  }
  return problems;
}

before(async () => {
  const problems = missing();
  if (problems.length > 0) {
    // Fail, never skip: a console nobody tested is a defect.
    throw new Error(`cannot run the browser tests: ${problems.join('; ')}`);
  }
  const { chromium } = await import('playwright-core');
  // playwright-core gives every launch a fresh temporary profile
  // (--user-data-dir), removed when the browser closes.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
});

after(async () => {
  await browser?.close();
});

// ---------------------------------------------------------------- helpers

/** Retries `check` (which throws until satisfied) for up to `timeout` ms. */
async function eventually(check, { timeout = 10_000, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${last?.message ?? last}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function http(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: response.status, json, text, headers: response.headers };
}

/** A tool call of the billing agent, as its framework would send it. */
function call(tool, args, { server = 'billing', principal = {} } = {}) {
  return {
    principal: { id: AGENT, on_behalf_of: PERSON, ...principal },
    action: {
      server,
      tool,
      annotations: { readOnlyHint: tool.startsWith('read_'), destructiveHint: tool.startsWith('delete_') },
    },
    arguments: args,
    context: {
      task: {
        id: 'task-invoices-week-47',
        intent: 'pay the supplier invoices due this week',
        tools: ['read_invoice', 'pay_invoice', 'wire_transfer', 'delete_records', 'export_customers'],
      },
    },
  };
}

async function decide(request, { token } = {}) {
  const reply = await http('POST', '/v1/decide', { body: request, token });
  assert.equal(reply.status, 200, `POST /v1/decide: ${reply.status} ${reply.text}`);
  return reply.json;
}

/** Asks for a gated call; asserts that it waits for a person. */
async function ask(tool, args, options) {
  const request = call(tool, args, options);
  const answer = await decide(request);
  assert.equal(answer.decision, 'approval_required', JSON.stringify(answer));
  assert.ok(answer.approval_id, `no approval_id: ${JSON.stringify(answer)}`);
  return { request, answer, id: answer.approval_id };
}

/** The approval's status fields, as an agent sees them (no credentials). */
async function approvalStatus(id, wait) {
  const reply = await http('GET', `/v1/approvals/${id}${wait ? `?wait=${wait}` : ''}`);
  assert.equal(reply.status, 200, `GET /v1/approvals/${id}: ${reply.status} ${reply.text}`);
  return reply.json;
}

/**
 * A new page (fresh context: no storage) that records script errors and CSP
 * violations; `options` override the context's (viewport, timezoneId, …).
 */
async function newPage(options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    reducedMotion: 'reduce',
    locale: 'en-GB',
    timezoneId: 'UTC',
    ...options,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    // A refused API call (401, 409) logs "Failed to load resource": expected.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on('dialog', (d) => {
    problems.push(`unexpected dialog: ${d.message()}`);
    d.dismiss();
  });
  page.problems = problems;
  page.done = async () => {
    await context.close();
    assert.deepEqual(problems, [], 'the page logged errors (a CSP violation, a script error)');
  };
  return page;
}

async function signIn(page, token = TOKEN) {
  await page.goto(`${BASE}/ui`);
  await page.getByLabel('Approver token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function signedIn(view = 'approvals', options = {}) {
  const page = await newPage(options);
  await signIn(page);
  await page.locator('#approver-name').getByText(APPROVER).waitFor();
  if (view !== 'approvals') await page.getByRole('navigation').getByRole('link', { name: new RegExp(`^${view}`, 'i') }).click();
  return page;
}

function card(page, approvalId) {
  return page.locator(`#queue > li[data-approval-id="${approvalId}"]`);
}

/** Denies the approval in `item` (a queue card) from the console, and waits until it leaves. */
async function denyInConsole(item, reason = 'Not now') {
  await item.getByLabel('Reason for your decision').fill(reason);
  await item.getByRole('button', { name: 'Deny' }).click();
  await item.waitFor({ state: 'detached' });
}

/**
 * What, inside `root`, is cut off by a box that scrolls or clips: each
 * element whose content is taller or wider than its box while its overflow
 * is not `visible`. Empty when everything is in view.
 */
async function clipped(root) {
  return root.evaluate((node) => {
    const found = [];
    for (const e of [node, ...node.querySelectorAll('*')]) {
      // Text for screen readers only is meant to be clipped.
      if (e.closest('.visually-hidden')) continue;
      const style = getComputedStyle(e);
      const hides = (o) => o !== 'visible';
      if (hides(style.overflowY) && e.scrollHeight > e.clientHeight + 1) {
        found.push(`${e.tagName}.${e.className}: ${e.scrollHeight}px of content in ${e.clientHeight}px`);
      }
      if (hides(style.overflowX) && e.scrollWidth > e.clientWidth + 1) {
        found.push(`${e.tagName}.${e.className}: ${e.scrollWidth}px wide content in ${e.clientWidth}px`);
      }
    }
    return found;
  });
}

async function screenshot(page, name) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, name), fullPage: false, animations: 'disabled' });
}

// Approvals opened in one test and answered in a later one.
const open = {};

// ---------------------------------------------------------------- tests

test('the console is served with strict security headers', async () => {
  for (const [path, type] of [
    ['/ui', 'text/html'],
    ['/ui/', 'text/html'],
    ['/ui/console.js', 'text/javascript'],
    ['/ui/console.css', 'text/css'],
  ]) {
    const reply = await http('GET', path);
    assert.equal(reply.status, 200, path);
    assert.ok(reply.headers.get('content-type').startsWith(type), `${path}: ${reply.headers.get('content-type')}`);
    const csp = reply.headers.get('content-security-policy') ?? '';
    for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"]) {
      assert.ok(csp.includes(directive), `${path}: CSP lacks ${directive}: ${csp}`);
    }
    assert.equal(reply.headers.get('x-content-type-options'), 'nosniff', path);
    assert.equal(reply.headers.get('referrer-policy'), 'no-referrer', path);
    assert.equal(reply.headers.get('cache-control'), 'no-cache', path);
  }
});

test('a wrong token shows the sign-in error and opens nothing', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/ui`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  // The token field has the focus at once.
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'signin-token');

  await page.getByRole('button', { name: 'Sign in' }).click();
  const alert = page.locator('#signin-error');
  await alert.getByText('Paste your approver token').waitFor();

  await page.getByLabel('Approver token').fill('not-an-approver-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await alert.getByText('That token was not accepted').waitFor();
  assert.equal(await alert.getAttribute('role'), 'alert');
  assert.equal(await page.getByLabel('Approver token').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.getByRole('navigation', { name: 'Console sections' }).isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  await page.done();
});

test('a receipt altered after it was signed shows its proof as failed, in the feed and in the explorer', async () => {
  const index = Number.parseInt(TAMPERED_INDEX, 10);
  assert.ok(Number.isInteger(index), 'MANDATE_TAMPERED_INDEX is not set: run these tests through `cargo test -p mandate --test console`');
  const page = await signedIn('decisions');
  const row = page.locator(`#feed tbody tr[data-index="${index}"]`);
  await row.waitFor();
  // The altered receipt reads `allow`; its proof column says it does not check.
  assert.match(await row.innerText(), /\ballow\b/);
  await eventually(async () => assert.match(await row.locator('td.cell-proof').innerText(), /failed/), { what: 'the failed proof in the feed' });
  assert.equal(await row.evaluate((tr) => tr.classList.contains('row-proof-failed')), true, 'the row is not marked');

  // The explorer says the same, in its list and in the receipt.
  await row.getByRole('button', { name: /^Details/ }).click();
  const detail = page.locator('#receipt-detail');
  await detail.getByRole('heading', { name: `Receipt #${index}` }).waitFor();
  await detail.getByText('does NOT check against the signed checkpoint').waitFor();
  await eventually(async () => {
    const listed = page.locator(`#results tbody tr[data-index="${index}"]`);
    assert.match(await listed.innerText(), /failed/);
  }, { what: 'the failed proof in the explorer' });
  await page.done();
});

test('an agent call waits, a person approves it in the console, the call is released', async () => {
  const page = await signedIn();
  await page.getByRole('heading', { name: 'Approval queue' }).waitFor();
  // The queue has loaded (empty): what comes now is new, and announced.
  await page.getByText('No calls are waiting for approval.').waitFor();

  const pay = await ask('pay_invoice', { invoice: 'INV-2041', payee: 'ACME Supplies Ltd', amount: 1250, currency: 'EUR' });
  // A second one waits too; a later test denies it.
  open.delete = await ask('delete_records', { table: 'customers', where: { last_order_before: '2019-01-01' }, count: 4210 });

  // The agent waits on a long poll while the person decides.
  const waited = approvalStatus(pay.id, '30s');

  const item = card(page, pay.id);
  await item.waitFor();
  const text = await item.innerText();
  for (const expected of ['pay_invoice', 'billing', AGENT, PERSON, 'INV-2041', 'ACME Supplies Ltd', "payments need a person's sign-off", 'payment-needs-approval', 'pay the supplier invoices due this week']) {
    assert.ok(text.includes(expected), `the queue does not show \`${expected}\`:\n${text}`);
  }
  assert.match(text, /Expires in \d+:\d\d/);
  // The count in the navigation, and a screen-reader announcement.
  await eventually(async () => assert.equal(await page.locator('#pending-count').innerText(), '2'), { what: 'the pending count' });
  await eventually(async () => assert.match(await page.locator('#announcer').innerText(), /New approval request|new approval requests/), { what: 'the announcement' });
  await card(page, open.delete.id).waitFor();
  await screenshot(page, 'console-queue.png');

  // No reason, no approval: the console says so and sends nothing.
  await item.getByRole('button', { name: 'Approve' }).click();
  await item.getByText('Write a reason before you approve').waitFor();
  assert.equal((await approvalStatus(pay.id)).status, 'pending');

  // With the keyboard only: type the reason, Tab to Approve, Enter.
  await item.getByLabel('Reason for your decision').fill('Invoice matches purchase order PO-7731');
  await item.getByLabel('Reason for your decision').focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Approve');
  await page.keyboard.press('Enter');
  await item.waitFor({ state: 'detached' });
  // Focus moved to the next request, not lost to the page.
  await eventually(async () => assert.notEqual(await page.evaluate(() => document.activeElement?.tagName), 'BODY'), { what: 'focus to move' });
  await eventually(async () => assert.match(await page.locator('#announcer').innerText(), /Approved: billing\/pay_invoice/), { what: 'the announcement' });

  // The long poll answers at once with the person's decision.
  const status = await waited;
  assert.equal(status.status, 'approved', JSON.stringify(status));
  assert.equal(status.resolved_by, APPROVER);
  assert.equal(status.reason, 'Invoice matches purchase order PO-7731');

  // The agent asks again with the approval: the call is released.
  const released = await decide({ ...pay.request, approval_id: pay.id });
  assert.equal(released.decision, 'allow', JSON.stringify(released));
  assert.equal(released.approver, APPROVER, JSON.stringify(released));

  // The resolved list shows who approved and why.
  const resolved = page.locator('#resolved');
  await resolved.getByText('Invoice matches purchase order PO-7731').waitFor();
  await page.done();
});

test('a deny with a reason shows up in the receipt explorer, with the approver and the proof status', async () => {
  const page = await signedIn();
  const target = open.delete ?? await ask('delete_records', { table: 'customers', count: 4210 });
  const reason = 'Bulk deletion of customer records is not part of this task';
  const item = card(page, target.id);
  await item.waitFor();
  await item.getByLabel('Reason for your decision').fill(reason);
  await item.getByRole('button', { name: 'Deny' }).click();
  await item.waitFor({ state: 'detached' });

  const status = await approvalStatus(target.id);
  assert.equal(status.status, 'denied', JSON.stringify(status));
  assert.equal(status.reason, reason);
  const again = await decide({ ...target.request, approval_id: target.id });
  assert.equal(again.decision, 'deny', `a denied approval released the call: ${JSON.stringify(again)}`);

  // The receipt explorer: search by tool and outcome.
  await page.getByRole('navigation').getByRole('link', { name: 'Receipts' }).click();
  await page.getByRole('heading', { name: 'Receipt explorer' }).waitFor();
  await page.getByLabel('Tool').fill('billing/delete_records');
  await page.getByLabel('Outcome').selectOption('denied');
  // A checkpoint covers new receipts within checkpoint_interval_ms: search
  // until the proof of this one checks.
  const results = page.locator('#results tbody tr');
  await eventually(async () => {
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.locator('#search-status').getByText(/receipts? shown/).waitFor({ timeout: 2000 });
    assert.equal(await results.count(), 1, await page.locator('#results').innerText());
    const row = await results.first().innerText();
    assert.match(row, /approval/);
    assert.match(row, /denied/);
    assert.match(row, /verified/);
  }, { timeout: 15_000, what: 'the denial receipt, with its proof verified' });

  await results.first().getByRole('button', { name: /^Open receipt/ }).click();
  const detail = page.locator('#receipt-detail');
  await detail.getByRole('heading', { name: /^Receipt #\d+$/ }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'receipt-detail', 'focus moves to the receipt');
  const shown = await detail.innerText();
  for (const expected of [reason, APPROVER, 'billing/delete_records', AGENT, target.id, 'verified', 'checks against the signed checkpoint']) {
    assert.ok(shown.includes(expected), `the receipt does not show \`${expected}\`:\n${shown}`);
  }

  // Search by tool only: the whole story of that call, newest first (the
  // resubmission's deny, the denial, the request), and open the denial.
  await page.getByLabel('Outcome').selectOption('');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await eventually(async () => {
    const rows = await results.allInnerTexts();
    assert.ok(rows.length >= 3, rows.join('\n'));
    assert.match(rows[0], /\bdeny\b/);
    assert.match(rows[1], /denied/);
    assert.match(rows.at(-1), /approval required/);
  }, { what: 'the three receipts of the deleted call' });
  await results.nth(1).getByRole('button', { name: /^Open receipt/ }).click();
  await detail.getByText(reason, { exact: true }).waitFor();
  await screenshot(page, 'console-receipts.png');

  // The same receipt as the API has it: the detail showed what is signed.
  const bundle = await http('GET', `/v1/receipts/${target.id}`);
  assert.equal(bundle.status, 200, bundle.text);
  assert.equal(bundle.json.receipt.approver, APPROVER);
  assert.deepEqual(bundle.json.receipt.reasons, [reason]);

  // The released call's deny is findable too: by tool and outcome `deny`.
  await page.getByLabel('Outcome').selectOption('deny');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await eventually(async () => {
    const rows = await results.allInnerTexts();
    assert.ok(rows.length >= 1 && rows.every((r) => /delete_records/.test(r) && /\bdeny\b/.test(r)), rows.join('\n'));
  }, { what: 'the deny of the resubmitted call' });
  await page.done();
});

test('a decision a shadow pack would make otherwise is marked in the explorer, live and shadow side by side', async () => {
  assert.ok(SHADOW_PACK, 'MANDATE_SHADOW_PACK is not set: run these tests through `cargo test -p mandate --test console`');
  const page = await signedIn();
  // Allowed live; the shadow pack would deny it. The agent hears nothing of it.
  const answer = await decide(call('read_invoice', { invoice: 'INV-SHADOW-7' }));
  assert.equal(answer.decision, 'allow', JSON.stringify(answer));
  assert.equal(answer.shadow, undefined, `the agent sees shadow outcomes: ${JSON.stringify(answer)}`);

  await page.getByRole('navigation').getByRole('link', { name: 'Receipts' }).click();
  await page.getByRole('heading', { name: 'Receipt explorer' }).waitFor();
  await page.getByLabel('Tool').fill('billing/read_invoice');
  await page.getByLabel('Outcome').selectOption('allow');
  const results = page.locator('#results tbody tr');
  const row = results.filter({ hasText: 'shadow differs' }).first();
  await eventually(async () => {
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.locator('#search-status').getByText(/receipts? shown/).waitFor({ timeout: 2000 });
    assert.ok(await row.count() > 0, await page.locator('#results').innerText());
  }, { what: 'the allowed read, marked as a shadow disagreement' });
  assert.match(await row.innerText(), /\ballow\b/);

  await row.getByRole('button', { name: /^Open receipt/ }).click();
  const detail = page.locator('#receipt-detail');
  const table = detail.getByRole('table', { name: /Shadow packs/ });
  await table.waitFor();
  const live = table.getByRole('row', { name: /live \(in force\)/ });
  assert.match(await live.innerText(), /\ballow\b/);
  assert.match(await live.innerText(), /the tool is declared for the task/);
  const shadow = table.getByRole('row', { name: new RegExp(SHADOW_PACK) });
  const shadowText = await shadow.innerText();
  for (const expected of ['deny', 'disagrees', 'no-invoice-reads', 'the candidate reads no invoices']) {
    assert.ok(shadowText.includes(expected), `the shadow row does not show \`${expected}\`:\n${shadowText}`);
  }
  assert.match(await shadow.getAttribute('class'), /shadow-differs/);
  await table.scrollIntoViewIfNeeded();
  await screenshot(page, 'console-shadow.png');

  // The receipt the explorer showed is the signed one.
  const bundle = await http('GET', `/v1/receipts/${answer.decision_id}`);
  assert.equal(bundle.status, 200, bundle.text);
  assert.deepEqual(bundle.json.receipt.shadow.map((s) => [s.pack, s.decision]), [[SHADOW_PACK, 'deny']]);
  await page.done();
});

test('a call nobody approves expires, leaves the queue, and is denied', async () => {
  const page = await signedIn();
  const wire = await ask('wire_transfer', { iban: 'DE89 3704 0044 0532 0130 00', amount: 98000, currency: 'EUR' });
  const item = card(page, wire.id);
  await item.waitFor();
  assert.match(await item.innerText(), /Expires in 0:0\d/);

  // Nobody answers: it leaves the queue when it expires.
  await item.waitFor({ state: 'detached', timeout: 15_000 });
  const status = await approvalStatus(wire.id);
  assert.equal(status.status, 'expired', JSON.stringify(status));
  assert.equal(status.resolved_by ?? null, null);

  // Asking again with the expired approval is denied.
  const again = await decide({ ...wire.request, approval_id: wire.id });
  assert.equal(again.decision, 'deny', `an expired approval released the call: ${JSON.stringify(again)}`);

  // The resolved list says it expired, with nobody's name.
  await eventually(async () => {
    const rows = await page.locator('#resolved tbody tr').allInnerTexts();
    assert.ok(rows.some((r) => /expired/.test(r) && /wire_transfer/.test(r) && /nobody/.test(r)), rows.join('\n'));
  }, { what: 'the expired approval in the resolved list' });
  await page.done();
});

test('the decisions feed shows new decisions live, and can be paused', async () => {
  const page = await signedIn('decisions');
  await page.getByRole('heading', { name: 'Decisions' }).waitFor();
  const rows = page.locator('#feed tbody tr');
  await rows.first().waitFor();

  const first = await decide(call('read_invoice', { invoice: 'INV-3001' }));
  assert.equal(first.decision, 'allow');
  const row = page.locator(`#feed tbody tr[data-index="${first.receipt_index}"]`);
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.innerText(), /read_invoice[\s\S]*billing|billing[\s\S]*read_invoice/);
  assert.match(await row.innerText(), /allow/);
  // Newest first. Other receipts may land meanwhile (the expiry of an
  // approval left by an earlier test), so check the order, not the top row.
  const shownIndexes = (await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.index))));
  assert.deepEqual(shownIndexes, [...shownIndexes].sort((a, b) => b - a), 'newest first');

  const denied = await decide(call('export_customers', { format: 'csv' }));
  assert.equal(denied.decision, 'deny');
  await page.locator(`#feed tbody tr[data-index="${denied.receipt_index}"]`).getByText('deny').waitFor({ timeout: 5000 });

  // Paused: nothing new appears; resumed: it does.
  await page.getByRole('button', { name: 'Pause feed' }).click();
  assert.equal(await page.getByRole('button', { name: 'Resume feed' }).getAttribute('aria-pressed'), 'true');
  const quiet = await decide(call('read_invoice', { invoice: 'INV-3002' }));
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.equal(await page.locator(`#feed tbody tr[data-index="${quiet.receipt_index}"]`).count(), 0, 'the paused feed moved');
  await page.getByRole('button', { name: 'Resume feed' }).click();
  await page.locator(`#feed tbody tr[data-index="${quiet.receipt_index}"]`).waitFor({ timeout: 5000 });

  // A row opens its receipt in the explorer.
  await page.locator(`#feed tbody tr[data-index="${denied.receipt_index}"]`).getByRole('button', { name: /^Details/ }).click();
  const detail = page.locator('#receipt-detail');
  await detail.getByRole('heading', { name: `Receipt #${denied.receipt_index}` }).waitFor();
  assert.match(await detail.innerText(), /no-customer-export/);
  await page.done();
});

test('a tool argument holding HTML is shown as text, never run', async () => {
  const page = await signedIn();
  // No double quotes, so that the JSON of the arguments shows it verbatim.
  const payload = '<img src=x onerror=window.__mandateXss=1>';
  const hostile = await ask('pay_invoice', {
    invoice: payload,
    payee: '<script>window.__mandateXss=2</script>',
    note: '"><svg onload="window.__mandateXss=3">',
  }, { principal: { on_behalf_of: '<b>alice</b>@example.com' } });
  const item = card(page, hostile.id);
  await item.waitFor();
  const text = await item.innerText();
  assert.ok(text.includes(payload), `the argument is not shown as text:\n${text}`);
  assert.ok(text.includes('<b>alice</b>@example.com'), text);
  assert.equal(await item.locator('img, script, svg, b').count(), 0, 'markup from the request became elements');
  // Give any injected handler the time to fire.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(await page.evaluate(() => window.__mandateXss), undefined, 'injected script ran');

  // The receipt explorer renders it as text too.
  await item.getByLabel('Reason for your decision').fill('Hostile arguments');
  await item.getByRole('button', { name: 'Deny' }).click();
  await item.waitFor({ state: 'detached' });
  await page.getByRole('navigation').getByRole('link', { name: 'Receipts' }).click();
  await page.getByLabel('Tool').fill('billing/pay_invoice');
  await page.getByLabel('Outcome').selectOption('approval_required');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.locator('#results tbody tr').first().getByRole('button', { name: /^Open receipt/ }).click();
  const detail = page.locator('#receipt-detail');
  await detail.getByRole('heading', { name: /^Receipt #/ }).waitFor();
  assert.ok((await detail.innerText()).includes(payload));
  assert.equal(await detail.locator('img, script, svg, b').count(), 0);
  assert.equal(await page.evaluate(() => window.__mandateXss), undefined, 'injected script ran');
  await page.done();
});

test('a request without a task credential is marked unverified; one under a credential is not', async () => {
  assert.ok(TASK_CREDENTIAL, 'MANDATE_TASK_CREDENTIAL is not set: run these tests through `cargo test -p mandate --test console`');
  const page = await signedIn();
  // Without a credential: the agent and its person are what the caller wrote.
  const asserted = await ask('pay_invoice', { invoice: 'INV-5001', amount: 310 });
  // Under the task's root credential: verified.
  const credentialed = await decide({
    principal: { id: ROOT_AGENT },
    action: { server: 'billing', tool: 'pay_invoice', annotations: { readOnlyHint: false } },
    arguments: { invoice: 'INV-5002', amount: 320 },
  }, { token: TASK_CREDENTIAL });
  assert.equal(credentialed.decision, 'approval_required', JSON.stringify(credentialed));

  const unverified = card(page, asserted.id);
  await unverified.waitFor();
  const warning = unverified.locator('.identity-warning');
  assert.match(await warning.innerText(), /identity asserted by the caller, not verified/);
  assert.equal(await warning.isVisible(), true);
  assert.match(await unverified.locator('.agent').innerText(), /unverified/);

  const verified = card(page, credentialed.approval_id);
  await verified.waitFor();
  assert.equal(await verified.locator('.identity-warning').count(), 0, 'a verified request is marked unverified');
  assert.match(await verified.locator('.agent').innerText(), /\bverified\b/);
  assert.doesNotMatch(await verified.locator('.agent').innerText(), /unverified/);

  await denyInConsole(unverified);
  await denyInConsole(verified);

  // The feed marks the agent of each receipt the same way.
  await page.getByRole('navigation').getByRole('link', { name: 'Decisions' }).click();
  const agentOf = (index) => page.locator(`#feed tbody tr[data-index="${index}"] td.cell-agent`);
  await agentOf(asserted.answer.receipt_index).waitFor();
  assert.match(await agentOf(asserted.answer.receipt_index).innerText(), /unverified/);
  assert.doesNotMatch(await agentOf(credentialed.receipt_index).innerText(), /unverified/);
  assert.match(await agentOf(credentialed.receipt_index).innerText(), /\bverified\b/);
  await page.done();
});

test('every argument is on the page, long strings one click away, and those the policies read are marked', async () => {
  const page = await signedIn();
  const memo = `Quarterly settlement. ${'Line item reconciled against the ledger; '.repeat(20)}END-OF-MEMO`;
  const args = {
    invoice: 'INV-7007',
    payee: 'ACME Supplies Ltd',
    amount: 1250,
    currency: 'EUR',
    due: '2026-12-31',
    purchase_order: 'PO-7731',
    cost_centre: 'CC-204',
    approver_hint: 'finance team',
    reference: 'Q4 settlement',
    batch: 12,
    priority: 'normal',
    notify: ['ap@example.com', 'controller@example.com'],
    memo,
    amount_override: 950000,
    payee_iban: 'XX00 0000 0000 0000 0000 00',
  };
  const asked = await ask('pay_invoice', args);
  const item = card(page, asked.id);
  await item.waitFor();

  // Nothing in the card scrolls or is cut off: every argument is in view.
  assert.deepEqual(await clipped(item), [], 'something in the approval is cut off');
  for (const name of Object.keys(args)) {
    const row = item.locator(`[data-arg="${name}"]`);
    assert.equal(await row.count(), 1, `argument ${name} is not shown`);
    assert.equal(await row.isVisible(), true, `argument ${name} is hidden`);
  }
  const text = await item.innerText();
  assert.ok(text.includes('950000') && text.includes('XX00 0000 0000 0000 0000 00'), text);
  assert.match(text, /Arguments \(15\)/i);

  // A long string is cut, with its whole value one click away.
  assert.ok(!text.includes('END-OF-MEMO'), 'the long memo is shown whole');
  await item.locator('[data-arg="memo"]').getByRole('button', { name: /^Show all of memo/ }).click();
  assert.ok((await item.innerText()).includes('END-OF-MEMO'), 'the memo is not shown whole after the click');
  assert.deepEqual(await clipped(item), [], 'something in the approval is cut off');

  // `amount` is read by a policy (no-payment-of-a-million); nothing else is.
  assert.match(await item.locator('[data-arg="amount"]').innerText(), /read by policies/);
  assert.equal(await item.locator('[data-arg="amount"]').evaluate((e) => e.classList.contains('arg-read')), true);
  assert.equal(await item.locator('.arg-read').count(), 1);
  assert.equal(await item.locator('[data-arg="amount_override"]').evaluate((e) => e.classList.contains('arg-read')), false);

  // Times show their date and zone (the page runs in UTC).
  const requested = await item.locator('.fact time').first().innerText();
  assert.match(requested, /\b20\d\d\b/, `no date: ${requested}`);
  assert.match(requested, /\d\d:\d\d:\d\d UTC/, `no time zone: ${requested}`);

  await denyInConsole(item);
  await page.done();
});

test('times are local, with their date and time zone', async () => {
  const page = await signedIn('decisions', { timezoneId: 'Asia/Tokyo' });
  const made = await decide(call('read_invoice', { invoice: 'INV-7100' }));
  const time = page.locator(`#feed tbody tr[data-index="${made.receipt_index}"] time`);
  await time.waitFor();
  const iso = await time.getAttribute('datetime');
  const text = await time.innerText();
  const at = new Date(iso);
  const tokyo = new Date(at.getTime() + 9 * 3600 * 1000);
  const two = (n) => String(n).padStart(2, '0');
  assert.ok(text.includes(String(tokyo.getUTCFullYear())), `no year: ${text}`);
  assert.ok(text.includes(`${two(tokyo.getUTCHours())}:${two(tokyo.getUTCMinutes())}:${two(tokyo.getUTCSeconds())}`), `not Tokyo time: ${text} for ${iso}`);
  assert.match(text, /GMT\+9|JST/, `no time zone: ${text}`);
  await page.done();
});

test('in the explorer a click on a row opens its receipt, and a search that leaves it out closes it', async () => {
  const read = await decide(call('read_invoice', { invoice: 'INV-7200' }));
  const page = await signedIn('receipts');
  await page.getByLabel('Tool').fill('billing/read_invoice');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  const row = page.locator(`#results tbody tr[data-index="${read.receipt_index}"]`);
  await row.waitFor();
  // Anywhere on the row, not only its `#N` button.
  await row.locator('td').nth(4).click();
  const detail = page.locator('#receipt-detail');
  await detail.getByRole('heading', { name: `Receipt #${read.receipt_index}` }).waitFor();
  assert.equal(await row.evaluate((tr) => tr.classList.contains('selected')), true);

  // A search that does not find it closes it.
  await page.getByLabel('Tool').fill('billing/export_customers');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await row.waitFor({ state: 'detached' });
  await detail.waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#explorer').evaluate((e) => e.classList.contains('has-detail')), false);

  // One that still finds it keeps it open.
  await page.getByLabel('Tool').fill('billing/read_invoice');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await row.locator('td').nth(3).click();
  await detail.getByRole('heading', { name: `Receipt #${read.receipt_index}` }).waitFor();
  await page.getByLabel('Outcome').selectOption('allow');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.locator('#search-status').getByText(/receipts? shown/).waitFor();
  await row.waitFor();
  assert.equal(await detail.isVisible(), true, 'a search that still finds the receipt closed it');
  await page.done();
});

test('on a phone (390 px wide) the navigation fits, Sign out is on one line, nothing is wider than the screen', async () => {
  const page = await signedIn('approvals', { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const pending = await ask('pay_invoice', { invoice: 'INV-8001', payee: 'ACME Supplies Ltd', amount: 990, currency: 'EUR' });
  const item = card(page, pending.id);
  await item.waitFor();
  // The navigation holds the pending count too.
  await page.locator('#pending-count').waitFor();

  const layout = () => page.evaluate(() => {
    const problems = [];
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth > width + 1) {
      // Name the outermost elements that stick out, to say what to fix.
      const out = [...document.body.querySelectorAll('*')]
        .filter((e) => e.getBoundingClientRect().right > width + 1)
        // What a scrolling box holds does not widen the page, unless it is
        // positioned out of it.
        .filter((e) => ['absolute', 'fixed'].includes(getComputedStyle(e).position) || !e.parentElement.closest('.table-wrap, .results-pane'))
        .filter((e, _, all) => !all.includes(e.parentElement))
        .slice(0, 5)
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}.${e.className}`);
      problems.push(`the page is ${document.documentElement.scrollWidth}px wide on a ${width}px screen: ${out.join(', ')}`);
    }
    const nav = document.getElementById('nav');
    const box = nav.getBoundingClientRect();
    if (nav.scrollWidth > nav.clientWidth + 1) problems.push(`the navigation overflows: ${nav.scrollWidth}px in ${nav.clientWidth}px`);
    if (box.left < -1 || box.right > width + 1) problems.push(`the navigation spans ${box.left}–${box.right}px`);
    for (const link of nav.querySelectorAll('a')) {
      const r = link.getBoundingClientRect();
      const name = link.textContent.trim();
      if (r.width < 1 || r.height < 1) problems.push(`${name} is not shown`);
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1) {
        problems.push(`${name} sticks out of the navigation: ${r.left}–${r.right}px`);
      }
      if (link.scrollWidth > link.clientWidth + 1) problems.push(`${name} is cut off`);
    }
    const signOut = document.getElementById('sign-out');
    const s = signOut.getBoundingClientRect();
    if (s.left < 0 || s.right > width) problems.push(`Sign out spans ${s.left}–${s.right}px`);
    const range = document.createRange();
    range.selectNodeContents(signOut);
    const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    if (lines.size !== 1) problems.push(`Sign out takes ${lines.size} lines`);
    return problems;
  });
  assert.deepEqual(await layout(), [], 'the approvals view does not fit a phone');
  await screenshot(page, 'console-phone.png');
  // Approve and Deny can be reached.
  await item.getByRole('button', { name: 'Approve' }).scrollIntoViewIfNeeded();
  assert.equal(await item.getByRole('button', { name: 'Approve' }).isVisible(), true);
  assert.deepEqual(await clipped(item), [], 'something in the approval is cut off');

  // Each view once its content has loaded: a wide table must scroll in its
  // own box, not widen the page.
  const loaded = {
    Decisions: () => page.locator('#feed tbody tr').first().waitFor(),
    Receipts: () => page.locator('#results tbody tr').first().waitFor(),
    Tasks: () => page.locator('#tasks > li, #tasks-empty:not([hidden])').first().waitFor(),
  };
  for (const [view, ready] of Object.entries(loaded)) {
    await page.getByRole('navigation').getByRole('link', { name: view }).click();
    await ready();
    assert.deepEqual(await layout(), [], `the ${view} view does not fit a phone`);
  }
  // The receipt explorer with a receipt open.
  await page.getByRole('navigation').getByRole('link', { name: 'Receipts' }).click();
  await page.locator('#results tbody tr').first().getByRole('button', { name: /^Open receipt/ }).click();
  await page.locator('#receipt-detail').getByRole('heading', { name: /^Receipt #/ }).waitFor();
  assert.deepEqual(await layout(), [], 'an open receipt does not fit a phone');
  await page.getByRole('navigation').getByRole('link', { name: /^Approvals/ }).click();
  await denyInConsole(item);
  await page.done();
});

test('the task view shows an active task with its delegation tree, and ends it', async (t) => {
  if (!TASK_ID || !TASK_CREDENTIAL) {
    assert.fail('MANDATE_TASK_ID and MANDATE_TASK_CREDENTIAL are not set: run these tests through `cargo test -p mandate --test console`');
  }
  const page = await signedIn('tasks');
  await page.getByRole('heading', { name: 'Active tasks' }).waitFor();
  const item = page.locator(`#tasks > li[data-task-id="${TASK_ID}"]`);
  await item.waitFor();
  const text = await item.innerText();
  for (const expected of ['reconcile the supplier ledger', TASK_ID, 'spiffe://example.org/agent/planner', PERSON, 'Ends in']) {
    assert.ok(text.includes(expected), `the task does not show \`${expected}\`:\n${text}`);
  }
  // The tree: the sub-agent's credential is nested under the root's.
  const root = item.locator('.tree > .tree-node');
  assert.equal(await root.count(), 1);
  assert.match(await root.locator(':scope > .tree-item').innerText(), /agent\/planner[\s\S]*depth 0/);
  const child = root.locator(':scope > .tree-branch > .tree-node > .tree-item');
  assert.equal(await child.count(), 1);
  assert.match(await child.innerText(), /agent\/mailer[\s\S]*depth 1[\s\S]*billing\/read_invoice/);

  // End it: the button asks first; Cancel keeps the task.
  await item.getByRole('button', { name: 'End task', exact: true }).click();
  await item.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'End task');
  const before = await http('GET', `/v1/tasks/${TASK_ID}`, { token: TASK_CREDENTIAL });
  assert.equal(before.status, 200, `the task ended on Cancel: ${before.text}`);

  await item.getByRole('button', { name: 'End task', exact: true }).click();
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'End task now');
  await item.getByRole('button', { name: 'End task now' }).click();
  await item.waitFor({ state: 'detached' });
  await eventually(async () => assert.match(await page.locator('#announcer').innerText(), /Task ended: .*2 credentials revoked/), { what: 'the announcement' });

  // Its credentials are refused from now on.
  const after = await http('GET', `/v1/tasks/${TASK_ID}`, { token: TASK_CREDENTIAL });
  assert.equal(after.status, 401, after.text);
  await page.locator('#tasks-empty').waitFor();
  t.diagnostic(`task ${TASK_ID} ended from the console`);
  await page.done();
});

test('the session survives a reload, and signing out forgets the token', async () => {
  const page = await signedIn();
  await page.reload();
  await page.locator('#approver-name').getByText(APPROVER).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.done();
});
