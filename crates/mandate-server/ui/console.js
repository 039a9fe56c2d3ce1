// Mandate web console: the approval queue, a live feed of decisions, the
// receipt explorer and the task view, for a person holding an approver token.
//
// Security rules this file keeps:
// - Everything the server returns (tool names, arguments, reasons, agent ids)
//   may come from a hostile agent. It is put in the page with textContent and
//   DOM calls only, never parsed as HTML.
// - The approver token lives in sessionStorage (this tab only) and is sent as
//   `Authorization: Bearer`, nowhere else. No cookies: nothing for CSRF.
// - The page is served with a CSP that forbids inline script and style, so
//   this module uses no inline handlers and no style attributes.

const TOKEN_KEY = 'mandate.approverToken';
const POLL_MS = 1000;
const FEED_LIMIT = 50;
const SEARCH_LIMIT = 25;
const RESOLVED_SHOWN = 8;
// A request that takes longer has failed: the next poll tries again.
const REQUEST_TIMEOUT_MS = 15_000;

const state = {
  token: null,
  approver: null,
  view: null,
  // Server clock minus local clock, in ms (from the `Date` header).
  skewMs: 0,
  // Incremented on every sign-in and sign-out: a poll of an older
  // session drops its results.
  session: 0,
  pollTimer: null,
  queue: new Map(), // approval id -> { approval, li }
  queueLoaded: false,
  // Answered here: a poll sent before the answer must not bring them back.
  answered: new Set(),
  ended: new Set(), // tasks ended here, likewise
  feedRows: new Map(), // receipt index -> tr
  feedPaused: false,
  feedLoaded: false,
  tasks: new Map(), // task id -> { task, li, signature }
  search: null, // the query of the results shown
  results: [],
  selected: null, // index of the receipt shown in the detail panel
  ids: 0,
};

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

/**
 * Creates an element. `props` sets `class`, `text`, `attrs` (attributes),
 * `data` (dataset) and `on` (event listeners); `children` are nodes or
 * strings (as text, never HTML).
 */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const [name, value] of Object.entries(props.data ?? {})) node.dataset[name] = String(value);
  for (const [name, handler] of Object.entries(props.on ?? {})) node.addEventListener(name, handler);
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

function uid(prefix) {
  state.ids += 1;
  return `${prefix}-${state.ids}`;
}

function announce(message) {
  const region = $('announcer');
  // Clear first so that the same message twice is announced twice.
  region.textContent = '';
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}

function showError(node, message) {
  node.textContent = message ?? '';
  node.hidden = !message;
}

// ---------------------------------------------------------------- time

function serverNow() {
  return Date.now() + state.skewMs;
}

function noteServerTime(response) {
  const date = Date.parse(response.headers.get('date') ?? '');
  if (Number.isNaN(date)) return;
  // The header has whole seconds: only a clear difference is a skew.
  const skew = date + 500 - Date.now();
  state.skewMs = Math.abs(skew) > 1500 ? skew : 0;
}

// Every time shows its date and its zone: an approver paged at night, or
// comparing with a log, must not have to guess either. Local time, in the
// browser's zone; the API's RFC 3339 text is in the tooltip.
const dateFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

/** A `<time>` element showing `iso` in local time, with its date and zone. */
function timeEl(iso) {
  if (!iso) return el('span', { class: 'muted', text: '—' });
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return el('span', { text: iso });
  // Two parts that each stay on one line, so that a narrow column breaks
  // between the date and the time, never inside either.
  return el('time', { attrs: { datetime: iso, title: date.toISOString() } },
    el('span', { class: 'nowrap', text: dateFormat.format(date) }), ' ',
    el('span', { class: 'nowrap', text: clockFormat.format(date) }));
}

function formatLeft(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** A countdown to `iso`, kept current by `tickCountdowns`. */
function countdownEl(iso, label) {
  const node = el('span', { class: 'countdown', data: { expires: iso } },
    `${label} `, el('time', { attrs: { datetime: iso } }));
  updateCountdown(node);
  return node;
}

function updateCountdown(node) {
  const left = Date.parse(node.dataset.expires) - serverNow();
  const time = node.querySelector('time');
  time.textContent = Number.isNaN(left) ? '—' : formatLeft(left);
  node.classList.toggle('countdown-urgent', left < 30_000);
}

function tickCountdowns() {
  for (const node of document.querySelectorAll('.countdown[data-expires]')) updateCountdown(node);
  // A pending approval past its expiry is denied: take it off the queue at
  // once, whether or not the server has said so yet.
  const now = serverNow();
  for (const [id, entry] of state.queue) {
    if (Date.parse(entry.approval.expires_at) <= now) {
      removeQueued(id, `Expired without an answer, so denied: ${toolName(entry.approval)}`);
    }
  }
  updatePendingCount();
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the Mandate API with the approver token. A 401 signs out (the token
 * is no longer accepted), unless `signingIn` is set.
 */
async function api(path, { method = 'GET', body, token = state.token, signingIn = false } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token}` };
  const init = {
    method,
    headers,
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const session = state.session;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    setConnection('Cannot reach the Mandate server. Retrying…');
    throw new ApiError(0, 'unreachable', 'cannot reach the Mandate server');
  }
  setConnection(null);
  noteServerTime(response);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data && typeof data.error === 'string' ? data.error : `http_${response.status}`;
    const message = data && typeof data.message === 'string' ? data.message : `the server answered ${response.status}`;
    if (response.status === 401 && !signingIn && session === state.session && state.token) {
      signOut('The server no longer accepts your approver token. Sign in again.');
    }
    throw new ApiError(response.status, code, message);
  }
  if (session !== state.session && !signingIn) throw new ApiError(0, 'stale', 'signed out meanwhile');
  return data;
}

function setConnection(message) {
  const banner = $('connection');
  if (banner.textContent !== (message ?? '')) banner.textContent = message ?? '';
  banner.hidden = !message;
}

function items(data) {
  return Array.isArray(data?.items) ? data.items : [];
}

// ---------------------------------------------------------------- shared bits

function toolName(approval) {
  const s = approval.summary ?? {};
  return s.server ? `${s.server}/${s.tool ?? '?'}` : (s.tool ?? 'a call');
}

function receiptTool(r) {
  const call = r.call ?? {};
  if (call.server && call.tool) return `${call.server}/${call.tool}`;
  return call.tool ?? r.tool ?? '';
}

/**
 * What a receipt records as its outcome: `allow`, `deny` or
 * `approval_required` for a decision; `approved`, `denied`, `expired` or
 * `withdrawn` for the resolution of an approval (kind `approval`).
 */
function outcomeOf(r) {
  return r.decision ?? '';
}

const OUTCOME_TONE = {
  allow: 'ok', approved: 'ok', used: 'ok', verified: 'ok', open: 'ok',
  deny: 'bad', denied: 'bad', expired: 'bad', withdrawn: 'bad', failed: 'bad',
  approval_required: 'wait', pending: 'wait',
};

/**
 * The shadow packs that decided otherwise than the live pack's policies
 * (`agrees` is computed by the server before any approval: a call sent to
 * a person and then released agrees with a shadow that would also ask).
 */
function shadowDisagreements(r) {
  const shadow = Array.isArray(r.shadow) ? r.shadow : [];
  return shadow.filter((s) => s.agrees === false);
}

/**
 * What each shadow pack (a candidate evaluated beside the live pack, never
 * deciding) made of the call, beside what the live pack decided: one row
 * each, the live pack first, disagreements marked.
 */
function shadowEl(r) {
  const shadow = Array.isArray(r.shadow) ? r.shadow : [];
  if (shadow.length === 0) return null;
  const row = (name, outcome, policies, reasons, { live = false, agrees = true } = {}) => {
    const differs = !live && !agrees;
    return el('tr', { class: differs ? 'shadow-differs' : '' },
      el('th', { attrs: { scope: 'row' } }, live ? el('strong', { text: name }) : code(name)),
      el('td', {}, badge(outcome), ' ', live ? null : el('span', { class: differs ? 'shadow-verdict shadow-verdict-differs' : 'shadow-verdict', text: differs ? 'disagrees' : 'agrees' })),
      el('td', {}, list(policies)),
      el('td', {}, list(reasons)));
  };
  const table = el('table', { class: 'shadow-table' },
    el('caption', { text: 'Shadow packs: candidates that evaluate the same request but do not decide. Agreement is judged before any approval.' }),
    el('thead', {}, el('tr', {},
      el('th', { attrs: { scope: 'col' }, text: 'Pack' }),
      el('th', { attrs: { scope: 'col' }, text: 'Outcome' }),
      el('th', { attrs: { scope: 'col' }, text: 'Policies' }),
      el('th', { attrs: { scope: 'col' }, text: 'Reasons' }))),
    el('tbody', {},
      row('live (in force)', r.decision, r.policies, r.reasons, { live: true }),
      shadow.map((s) => row(s.pack, s.decision, s.policies, s.reasons, { agrees: s.agrees !== false }))));
  return el('section', { class: 'shadow', attrs: { 'aria-label': 'Shadow packs' } }, table);
}

function badge(value, { label } = {}) {
  const tone = OUTCOME_TONE[value] ?? 'neutral';
  return el('span', { class: `badge badge-${tone}`, text: label ?? String(value).replace(/_/g, ' ') });
}

function json(value) {
  return el('pre', { class: 'json', text: JSON.stringify(value ?? null, null, 2) });
}

/** A `<dl>` from [term, value] pairs; values are nodes or text; empty ones are left out. */
function facts(pairs, cls = 'facts') {
  const dl = el('dl', { class: cls });
  for (const [term, value, wide] of pairs) {
    if (value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0)) continue;
    dl.append(el('div', { class: wide ? 'fact fact-wide' : 'fact' }, el('dt', { text: term }), el('dd', {}, value)));
  }
  return dl;
}

function chainEl(chain) {
  if (!Array.isArray(chain) || chain.length === 0) return null;
  const list = el('ol', { class: 'chain', attrs: { 'aria-label': 'Delegation chain, root first' } });
  for (const hop of chain) list.append(el('li', { text: hop.agent ?? String(hop) }));
  return list;
}

function list(values) {
  if (!Array.isArray(values) || values.length === 0) return null;
  return el('ul', { class: 'inline-list' }, values.map((v) => el('li', { text: typeof v === 'string' ? v : JSON.stringify(v) })));
}

/** The first 12 hex digits of a digest, as `git` shows commits. */
function shortHash(text) {
  const hex = String(text).replace(/^sha256:/, '');
  return hex.length > 16 ? `${hex.slice(0, 12)}…` : hex;
}

function code(text) {
  return text ? el('code', { text }) : null;
}

// ---------------------------------------------------------------- identity

const UNVERIFIED_TEXT = 'identity asserted by the caller, not verified';
const UNVERIFIED_DETAIL = 'No task credential backs this request: the agent, the person it acts for and the delegation chain are what the caller wrote.';

/**
 * Whether a receipt's identities were verified: a call under a task
 * credential records its delegation chain; one without records none, and
 * its agent and person are what the caller wrote.
 */
function receiptVerified(r) {
  return Array.isArray(r.delegation) && r.delegation.length > 0;
}

/** A badge saying whether an identity was verified. */
function identityBadge(verified) {
  return verified
    ? el('span', { class: 'badge badge-ok', text: 'verified', attrs: { title: 'Verified by a task credential' } })
    : el('span', { class: 'badge badge-unverified', text: 'unverified', attrs: { title: `${UNVERIFIED_TEXT}. ${UNVERIFIED_DETAIL}` } });
}

/** The prominent warning of a request whose identities nobody verified. */
function unverifiedWarning() {
  return el('p', { class: 'identity-warning' },
    el('strong', { text: `Unverified: ${UNVERIFIED_TEXT}.` }), ' ', UNVERIFIED_DETAIL);
}

/** An agent's id with its verification badge. */
function agentEl(id, verified, { asCode = true } = {}) {
  if (!id) return null;
  return el('span', { class: 'agent' }, asCode ? el('code', { text: id }) : id, ' ', identityBadge(verified));
}

// ---------------------------------------------------------------- arguments

// A string argument longer than this is shown cut, with its full value one
// click away; every other value is shown whole. Nothing scrolls inside the
// box: what an approver approves is on the page.
const LONG_STRING = 240;
const SHORT_STRING = 160;

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** One argument's value: JSON, with a long string collapsed behind a button. */
function argumentValue(value, name) {
  if (typeof value === 'string' && value.length > LONG_STRING) {
    const full = JSON.stringify(value);
    const cut = `${JSON.stringify(value.slice(0, SHORT_STRING)).slice(0, -1)}…`;
    const text = el('span', { class: 'arg-text', text: cut });
    const button = el('button', {
      class: 'link-button arg-toggle',
      text: `Show all ${value.length.toLocaleString()} characters`,
      attrs: { type: 'button', 'aria-expanded': 'false', 'aria-label': `Show all of ${name}: ${value.length} characters` },
    });
    button.addEventListener('click', () => {
      const open = button.getAttribute('aria-expanded') !== 'true';
      text.textContent = open ? full : cut;
      button.setAttribute('aria-expanded', String(open));
      button.textContent = open ? 'Show less' : `Show all ${value.length.toLocaleString()} characters`;
      button.setAttribute('aria-label', open ? `Show less of ${name}` : `Show all of ${name}: ${value.length} characters`);
    });
    return el('div', { class: 'arg-value arg-long' }, text, ' ', button);
  }
  const pretty = isPlainObject(value) || Array.isArray(value) ? JSON.stringify(value, null, 2) : JSON.stringify(value);
  return el('div', { class: 'arg-value', text: pretty ?? String(value) });
}

/**
 * All the arguments of a call, each on its own row; those in `read` (the
 * arguments the pack's policies read) are marked. Without a copy of the
 * arguments (kept only as a digest, or left out for their size) it says so.
 */
function argumentsEl(args, { read = [], omittedBytes = null, sha256 = null } = {}) {
  const heading = (count) => el('h3', { class: 'label', text: count === null ? 'Arguments' : `Arguments (${count})` });
  if (args === undefined || args === null) {
    const why = omittedBytes
      ? `Not shown: the arguments (${omittedBytes} bytes) are over the server's receipt_max_argument_bytes, so only their digest is kept.`
      : 'Not shown: this server keeps only a digest of the arguments (receipt_arguments = "digest").';
    return el('div', { class: 'arguments' }, heading(null),
      el('p', { class: 'arguments-missing' }, why, sha256 ? el('span', {}, ' ', el('code', { text: sha256 })) : null));
  }
  if (!isPlainObject(args)) {
    return el('div', { class: 'arguments' }, heading(null), el('div', { class: 'arg-value arg-whole', text: JSON.stringify(args, null, 2) }));
  }
  const names = Object.keys(args);
  const reads = new Set(Array.isArray(read) ? read : []);
  const list = el('dl', { class: 'args' });
  for (const name of names) {
    const isRead = reads.has(name);
    list.append(el('div', { class: isRead ? 'arg arg-read' : 'arg', data: { arg: name } },
      el('dt', {}, el('code', { text: name }), isRead ? el('span', { class: 'badge badge-read', text: 'read by policies' }) : null),
      el('dd', {}, argumentValue(args[name], name))));
  }
  const readShown = names.filter((n) => reads.has(n));
  return el('div', { class: 'arguments' },
    heading(names.length),
    readShown.length > 0
      ? el('p', { class: 'hint arguments-hint', text: `Marked: the arguments the server's policies read (${readShown.join(', ')}). The others did not count in the policies' decision: check them too.` })
      : null,
    names.length === 0 ? el('p', { class: 'muted', text: 'No arguments.' }) : list);
}

// ---------------------------------------------------------------- sign-in

async function signIn(token) {
  const me = await api('/v1/approvers/me', { token, signingIn: true });
  state.session += 1;
  state.token = token;
  state.approver = me?.name ?? me?.approver ?? 'approver';
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Private mode without storage: the session lasts until reload.
  }
  $('approver-name').textContent = state.approver;
  $('session').hidden = false;
  $('nav').hidden = false;
  startPolling();
  route();
  // The sign-in form is gone: put the keyboard focus on what replaced it.
  if (!document.activeElement || document.activeElement === document.body || $('view-signin').contains(document.activeElement)) {
    $(`${state.view}-title`).focus();
  }
}

function signOut(message) {
  state.session += 1;
  state.token = null;
  state.approver = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
  stopPolling();
  resetViews();
  $('session').hidden = true;
  $('nav').hidden = true;
  $('approver-name').textContent = '';
  showView('signin');
  const input = $('signin-token');
  input.value = '';
  showError($('signin-error'), message);
  input.focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $('signin-token');
  const error = $('signin-error');
  const button = event.target.querySelector('button[type=submit]');
  const token = input.value.trim();
  if (!token) {
    showError(error, 'Paste your approver token to sign in.');
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  button.disabled = true;
  showError(error, null);
  try {
    await signIn(token);
    input.value = '';
    input.removeAttribute('aria-invalid');
  } catch (e) {
    let message = `Cannot sign in: ${e.message}.`;
    if (e.code === 'no_approvers') {
      message = 'This Mandate server has no approvers yet: add an [[approvers]] entry to its configuration (mandate approvals token prints one), restart it, and sign in again.';
    } else if (e.status === 401) {
      message = 'That token was not accepted: it is not an approver token of this Mandate server. Check that you pasted all of it.';
    }
    showError(error, message);
    input.setAttribute('aria-invalid', 'true');
    input.select();
    input.focus();
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- views and routing

const VIEWS = ['approvals', 'decisions', 'receipts', 'tasks'];

function showView(name) {
  for (const section of document.querySelectorAll('main > .view')) {
    section.hidden = section.id !== `view-${name}`;
  }
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  state.view = name;
  document.title = titleText();
}

function route({ focus = false } = {}) {
  if (!state.token) return;
  const name = (location.hash.match(/^#\/([a-z]+)/) ?? [])[1];
  const view = VIEWS.includes(name) ? name : 'approvals';
  const changed = view !== state.view;
  showView(view);
  if (focus && changed) $(`${view}-title`).focus();
  // The explorer opens on the newest receipts; other views load at once
  // rather than at the next poll.
  if (view === 'receipts' && state.search === null) {
    // The first load is no search of the person's: a receipt opened from
    // the feed meanwhile stays open whether or not it is among the newest.
    runSearch(searchQuery($('search-form')), { append: false, initial: true });
  }
  if (changed && !document.hidden) {
    const feed = () => (state.feedPaused && state.feedLoaded ? Promise.resolve() : refreshFeed());
    const load = { approvals: refreshResolved, decisions: feed, tasks: refreshTasks }[view];
    load?.().catch(() => {});
  }
}

function titleText() {
  const count = state.queue.size;
  const view = state.view && state.view !== 'signin' ? `${state.view[0].toUpperCase()}${state.view.slice(1)} · ` : '';
  return `${count > 0 ? `(${count}) ` : ''}${view}Mandate console`;
}

function resetViews() {
  state.queue.clear();
  state.answered.clear();
  state.ended.clear();
  state.queueLoaded = false;
  clear($('queue'));
  $('queue-empty').hidden = true;
  clear($('resolved').tBodies[0]);
  $('resolved').hidden = true;
  $('resolved-empty').hidden = true;
  state.feedRows.clear();
  state.feedLoaded = false;
  clear($('feed').tBodies[0]);
  $('feed').hidden = true;
  state.tasks.clear();
  clear($('tasks'));
  state.search = null;
  state.results = [];
  state.selected = null;
  clear($('results').tBodies[0]);
  $('results').hidden = true;
  $('results-more').hidden = true;
  clear($('receipt-detail')).hidden = true;
  $('explorer').classList.remove('has-detail');
  $('search-status').textContent = '';
  updatePendingCount();
}

// ---------------------------------------------------------------- polling

function startPolling() {
  stopPolling();
  const session = state.session;
  const loop = async () => {
    if (session !== state.session) return;
    if (!document.hidden) await refresh();
    if (session === state.session) state.pollTimer = window.setTimeout(loop, POLL_MS);
  };
  state.pollTimer = window.setTimeout(loop, 0);
}

function stopPolling() {
  if (state.pollTimer !== null) window.clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

let refreshing = null;

/** One round of updates: the queue always (for the count), and the view shown. */
function refresh() {
  if (refreshing) return refreshing;
  const jobs = [refreshQueue()];
  if (state.view === 'approvals') jobs.push(refreshResolved());
  if (state.view === 'decisions' && !state.feedPaused) jobs.push(refreshFeed());
  if (state.view === 'tasks') jobs.push(refreshTasks());
  refreshing = Promise.allSettled(jobs).then(() => {
    refreshing = null;
  });
  return refreshing;
}

function refreshNow() {
  if (state.token && !document.hidden) refresh();
}

// ---------------------------------------------------------------- approval queue

async function refreshQueue() {
  const data = await api('/v1/approvals?status=pending&limit=100');
  renderQueue(items(data));
}

function renderQueue(approvals) {
  const now = serverNow();
  const listed = new Set(approvals.map((a) => a.id));
  for (const id of state.answered) if (!listed.has(id)) state.answered.delete(id);
  const live = approvals.filter((a) => a.status === 'pending' && Date.parse(a.expires_at) > now && !state.answered.has(a.id));
  const ids = new Set(live.map((a) => a.id));
  for (const id of [...state.queue.keys()]) {
    if (!ids.has(id)) {
      const entry = state.queue.get(id);
      removeQueued(id, `No longer waiting: ${toolName(entry.approval)}`);
    }
  }
  const queue = $('queue');
  const fresh = [];
  live.forEach((approval, position) => {
    let entry = state.queue.get(approval.id);
    if (!entry) {
      entry = { approval, li: approvalCard(approval) };
      state.queue.set(approval.id, entry);
      if (state.queueLoaded) fresh.push(approval);
    } else {
      entry.approval = approval;
    }
    const at = queue.children[position];
    if (at !== entry.li) queue.insertBefore(entry.li, at ?? null);
  });
  if (fresh.length === 1) {
    const a = fresh[0];
    const unverified = a.summary?.verified === true ? '' : ' (identity not verified)';
    announce(`New approval request: ${toolName(a)} from ${a.summary?.agent ?? 'an agent'}${unverified}`);
  } else if (fresh.length > 1) {
    announce(`${fresh.length} new approval requests`);
  }
  state.queueLoaded = true;
  $('queue-empty').hidden = state.queue.size > 0;
  updatePendingCount();
}

function updatePendingCount() {
  const count = $('pending-count');
  const n = state.queue.size;
  count.textContent = n > 0 ? String(n) : '';
  count.hidden = n === 0;
  const link = count.parentElement;
  link.setAttribute('aria-label', n > 0 ? `Approvals, ${n} waiting` : 'Approvals');
  document.title = titleText();
  if (state.queueLoaded) $('queue-empty').hidden = n > 0;
}

/** Takes an approval off the queue, keeping keyboard focus in a sensible place. */
function removeQueued(id, message) {
  const entry = state.queue.get(id);
  if (!entry) return;
  state.queue.delete(id);
  const li = entry.li;
  const hadFocus = li.contains(document.activeElement);
  const next = li.nextElementSibling ?? li.previousElementSibling;
  li.remove();
  if (hadFocus) {
    const heading = next?.querySelector('h2');
    (heading ?? $('approvals-title')).focus();
  }
  if (message) announce(message);
  updatePendingCount();
}

function approvalCard(approval) {
  const s = approval.summary ?? {};
  const titleId = uid('approval-title');
  const reasonId = uid('approval-reason');
  const errorId = uid('approval-error');
  const error = el('div', { class: 'form-error', attrs: { id: errorId, role: 'alert', hidden: true } });
  const textarea = el('textarea', {
    attrs: { id: reasonId, name: 'reason', rows: 3, required: true, 'aria-describedby': errorId, maxlength: 2000 },
  });
  const approve = el('button', { class: 'button button-approve', text: 'Approve', attrs: { type: 'submit', value: 'approve' } });
  const deny = el('button', { class: 'button button-deny', text: 'Deny', attrs: { type: 'submit', value: 'deny' } });
  const form = el('form', { class: 'resolve', attrs: { novalidate: true } },
    el('label', { attrs: { for: reasonId }, text: 'Reason for your decision' }),
    textarea,
    el('p', { class: 'hint', text: 'Recorded in the receipt with your name.' }),
    error,
    el('div', { class: 'actions actions-split' }, approve, deny));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const action = event.submitter?.value === 'deny' ? 'deny' : 'approve';
    resolveApproval(approval.id, action, { form, textarea, error, buttons: [approve, deny] });
  });

  const task = s.task ?? {};
  const why = Array.isArray(s.reasons) && s.reasons.length > 0 ? s.reasons.join('; ') : null;
  // Only an explicit `true` counts as verified.
  const verified = s.verified === true;
  const article = el('article', { class: 'card approval', attrs: { 'aria-labelledby': titleId } },
    el('header', { class: 'approval-head' },
      el('h2', { attrs: { id: titleId, tabindex: -1 } },
        el('span', { class: 'tool-server', text: s.server ? `${s.server} / ` : '' }),
        el('span', { class: 'tool-name', text: s.tool ?? 'unknown tool' })),
      countdownEl(approval.expires_at, 'Expires in')),
    why ? el('p', { class: 'approval-why' }, el('span', { class: 'visually-hidden', text: 'Why a person must decide: ' }), why) : null,
    verified ? null : unverifiedWarning(),
    el('div', { class: 'approval-body' },
      el('div', { class: 'approval-info' },
        facts([
          ['Agent', agentEl(s.agent, verified)],
          ['On behalf of', s.on_behalf_of],
          ['Task', task.intent || task.id ? el('span', {}, task.intent ?? '', task.id ? el('span', { class: 'muted', text: ` (${task.id})` }) : null) : null],
          ['Requested', timeEl(approval.created_at)],
          ['Delegation', chainEl(s.chain), true],
          ['Policies', list(s.policies)],
        ]),
        argumentsEl(s.arguments, { read: s.arguments_read, omittedBytes: s.arguments_omitted_bytes, sha256: s.arguments_sha256 })),
      form));
  return el('li', { data: { approvalId: approval.id } }, article);
}

/**
 * Marks buttons busy without disabling them: a disabled button loses the
 * keyboard focus, and the person would be thrown back to the page's top.
 */
function setBusy(container, buttons, busy) {
  if (busy) container.dataset.busy = 'true';
  else delete container.dataset.busy;
  for (const b of buttons) {
    if (busy) b.setAttribute('aria-disabled', 'true');
    else b.removeAttribute('aria-disabled');
  }
}

async function resolveApproval(id, action, { form, textarea, error, buttons }) {
  if (form.dataset.busy) return;
  const reason = textarea.value.trim();
  if (!reason) {
    showError(error, `Write a reason before you ${action}. It is recorded in the receipt.`);
    textarea.setAttribute('aria-invalid', 'true');
    textarea.focus();
    return;
  }
  textarea.removeAttribute('aria-invalid');
  showError(error, null);
  setBusy(form, buttons, true);
  const entry = state.queue.get(id);
  const tool = entry ? toolName(entry.approval) : 'the call';
  try {
    await api(`/v1/approvals/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: { reason } });
    state.answered.add(id);
    removeQueued(id, `${action === 'approve' ? 'Approved' : 'Denied'}: ${tool}`);
    refreshNow();
  } catch (e) {
    if (e.status === 409) {
      showError(error, 'This request is no longer pending: someone else answered it, it expired, or the agent withdrew it.');
    } else if (e.status !== 401) {
      showError(error, `Not recorded: ${e.message}.`);
    }
    setBusy(form, buttons, false);
  }
}

/**
 * Who resolved an approval no approver answered: nobody, or no one but a
 * withdrawal (by its agent, or because its task ended: the reason says which).
 */
function resolvedByNobody(status) {
  if (status === 'expired') return el('span', { class: 'muted', text: 'nobody' });
  if (status === 'withdrawn') return el('span', { class: 'muted', text: 'withdrawn (see reason)' });
  return '';
}

async function refreshResolved() {
  const data = await api('/v1/approvals?status=all&limit=50');
  const done = items(data).filter((a) => a.status !== 'pending').slice(0, RESOLVED_SHOWN);
  const table = $('resolved');
  const body = table.tBodies[0];
  const rows = done.map((a) => el('tr', {},
    el('td', {}, timeEl(a.resolved_at ?? a.expires_at)),
    el('td', {}, badge(a.status)),
    el('td', {}, code(toolName(a))),
    el('td', { class: 'cell-agent' }, agentEl(a.summary?.agent, a.summary?.verified === true, { asCode: false })),
    el('td', {}, a.resolved_by ?? resolvedByNobody(a.status)),
    el('td', { class: 'cell-reason' }, a.reason ?? '')));
  body.replaceChildren(...rows);
  table.hidden = rows.length === 0;
  $('resolved-empty').hidden = rows.length > 0;
}

// ---------------------------------------------------------------- decisions feed

async function refreshFeed() {
  const data = await api(`/v1/receipts?limit=${FEED_LIMIT}`);
  renderFeed(items(data));
}

function renderFeed(list) {
  const body = $('feed').tBodies[0];
  const fresh = [];
  const keep = new Set();
  // Newest first: prepend what is new, in order.
  let anchor = body.firstElementChild;
  for (const item of list) {
    const index = item.index ?? item.receipt?.index;
    keep.add(index);
    let row = state.feedRows.get(index);
    if (row) {
      // A receipt's proof goes from pending to verified (or failed) after
      // its row was drawn: keep the proof cell current.
      updateProofCell(row, item.proof);
      anchor = row.nextElementSibling;
    } else {
      row = feedRow(item);
      if (state.feedLoaded) {
        row.classList.add('fresh');
        fresh.push(item);
      }
      state.feedRows.set(index, row);
      body.insertBefore(row, anchor);
    }
  }
  for (const [index, row] of state.feedRows) {
    if (!keep.has(index)) {
      row.remove();
      state.feedRows.delete(index);
    }
  }
  state.feedLoaded = true;
  $('feed').hidden = state.feedRows.size === 0;
  $('feed-empty').hidden = state.feedRows.size > 0;
}

function feedRow(item) {
  const r = item.receipt ?? {};
  const index = item.index ?? r.index;
  const open = el('button', {
    class: 'button button-small button-quiet', text: 'Details',
    attrs: { type: 'button', 'aria-label': `Details of receipt ${index}` },
    on: { click: () => openReceiptFromFeed(item) },
  });
  return el('tr', { data: { index, proof: proofStatus(item.proof) }, class: proofStatus(item.proof) === 'failed' ? 'row-proof-failed' : '' },
    el('td', { class: 'cell-num', text: index }),
    el('td', {}, timeEl(r.time)),
    el('td', {}, badge(outcomeOf(r))),
    el('td', {}, code(receiptTool(r))),
    el('td', { class: 'cell-agent' }, agentEl(r.principal?.id, receiptVerified(r), { asCode: false })),
    el('td', { class: 'cell-policies' }, r.kind === 'approval'
      ? `by ${approverOf(r) ?? (outcomeOf(r) === 'withdrawn' ? `nobody (withdrawn: ${(r.reasons ?? []).join('; ')})` : 'nobody (expired)')}`
      : (r.policies ?? []).join(', ')),
    el('td', { class: 'cell-proof' }, proofBadge(item.proof)),
    el('td', { class: 'cell-actions' }, open));
}

function proofStatus(proof) {
  return proof?.status ?? 'unknown';
}

/** Redraws a feed row's proof cell when the receipt's proof status changed. */
function updateProofCell(row, proof) {
  const status = proofStatus(proof);
  if (row.dataset.proof === status) return;
  row.dataset.proof = status;
  row.classList.toggle('row-proof-failed', status === 'failed');
  row.querySelector('.cell-proof')?.replaceChildren(proofBadge(proof));
}

async function openReceiptFromFeed(item) {
  location.hash = '#/receipts';
  showView('receipts');
  showReceipt(item);
  // The feed's copy may predate the checkpoint that covers the receipt:
  // fetch its proof status afresh (the one receipt just below index + 1).
  const index = item.index ?? item.receipt?.index;
  try {
    const [fresh] = items(await api(`/v1/receipts?before=${index + 1}&limit=1`));
    if (fresh && (fresh.index ?? fresh.receipt?.index) === index && state.selected === index && state.view === 'receipts') {
      showReceipt(fresh, { focus: panelHasFocus() });
    }
  } catch {
    // The copy shown stays; its proof status may be older.
  }
}

function onFeedToggle() {
  state.feedPaused = !state.feedPaused;
  const button = $('feed-toggle');
  button.setAttribute('aria-pressed', String(state.feedPaused));
  button.textContent = state.feedPaused ? 'Resume feed' : 'Pause feed';
  announce(state.feedPaused ? 'Feed paused' : 'Feed resumed');
  refreshNow();
}

// ---------------------------------------------------------------- receipt explorer

function searchQuery(form) {
  const params = new URLSearchParams();
  for (const name of ['task', 'agent', 'tool', 'decision', 'kind']) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

async function onSearch(event) {
  event?.preventDefault();
  const params = searchQuery($('search-form'));
  await runSearch(params, { append: false });
}

async function runSearch(params, { append, initial = false }) {
  const error = $('search-error');
  const status = $('search-status');
  showError(error, null);
  const query = new URLSearchParams(params);
  query.set('limit', String(SEARCH_LIMIT));
  if (append && state.results.length > 0) {
    const last = state.results[state.results.length - 1];
    query.set('before', String(last.index ?? last.receipt?.index));
  }
  status.textContent = 'Searching…';
  let found;
  try {
    found = items(await api(`/v1/receipts?${query}`));
  } catch (e) {
    status.textContent = '';
    if (e.status !== 401) showError(error, `Search failed: ${e.message}.`);
    return;
  }
  state.search = params;
  state.results = append ? state.results.concat(found) : found;
  renderResults({ closeExcluded: !append && !initial });
  const n = state.results.length;
  status.textContent = n === 0 ? 'No receipt matches.' : `${n} receipt${n === 1 ? '' : 's'} shown, newest first.`;
  $('results-more').hidden = found.length < SEARCH_LIMIT;
}

function renderResults({ closeExcluded = false } = {}) {
  const table = $('results');
  const rows = state.results.map((item) => {
    const r = item.receipt ?? {};
    const index = item.index ?? r.index;
    const open = el('button', {
      class: 'link-button', text: `#${index}`,
      attrs: { type: 'button', 'aria-label': `Open receipt ${index}: ${outcomeOf(r)}, ${receiptTool(r)}` },
      on: { click: () => showReceipt(item) },
    });
    const classes = ['row-open', state.selected === index ? 'selected' : '', proofStatus(item.proof) === 'failed' ? 'row-proof-failed' : ''];
    const row = el('tr', { data: { index }, class: classes.filter(Boolean).join(' ') },
      el('td', { class: 'cell-num' }, open),
      el('td', {}, timeEl(r.time)),
      el('td', { class: 'col-kind', text: r.kind ?? '' }),
      el('td', {}, badge(outcomeOf(r)), ' ',
        shadowDisagreements(r).length > 0
          ? el('span', { class: 'badge badge-shadow', attrs: { title: shadowDisagreements(r).map((s) => `${s.pack}: ${s.decision}`).join(', ') }, text: 'shadow differs' })
          : null),
      el('td', {}, code(receiptTool(r))),
      el('td', { class: 'cell-agent col-agent' }, agentEl(r.principal?.id, receiptVerified(r), { asCode: false })),
      el('td', {}, proofBadge(item.proof)));
    // A click anywhere on the row opens the receipt, as its `#N` button
    // does for the keyboard; a click on a control or a text selection
    // (copying an id) does not.
    row.addEventListener('click', (event) => {
      if (event.target.closest('button, a, input, select, textarea')) return;
      if (String(window.getSelection?.() ?? '') !== '') return;
      showReceipt(item);
    });
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  // A search that no longer finds the receipt shown closes it: the detail
  // beside the results must be one of them.
  if (closeExcluded && state.selected !== null && !state.results.some((item) => (item.index ?? item.receipt?.index) === state.selected)) {
    closeReceipt({ focus: false });
    announce('The receipt that was open is not among the results: it is closed.');
  }
}

function proofBadge(proof) {
  const status = proofStatus(proof);
  const node = badge(status, { label: status === 'failed' ? 'failed: altered?' : status });
  node.title = `Inclusion proof: ${proofText(proof)}`;
  return node;
}

function proofText(proof) {
  const size = proof?.checkpoint_size;
  switch (proof?.status) {
    case 'verified':
      return `checks against the signed checkpoint of ${size} receipts.`;
    case 'pending':
      return 'no signed checkpoint covers this receipt yet; one is signed within seconds.';
    case 'failed':
      return `does NOT check against the signed checkpoint${size ? ` of ${size} receipts` : ''}. The log may have been altered: investigate.`;
    default:
      return 'The server did not report the proof status.';
  }
}

function approverOf(r) {
  const a = r.approver;
  if (!a) return null;
  return typeof a === 'string' ? a : (a.name ?? JSON.stringify(a));
}

/** Shows one receipt in the detail panel, and moves the focus there unless told not to. */
function showReceipt(item, { focus = true } = {}) {
  const r = item.receipt ?? {};
  const index = item.index ?? r.index;
  state.selected = index;
  for (const row of $('results').tBodies[0].rows) {
    row.classList.toggle('selected', row.dataset.index === String(index));
  }
  const panel = $('receipt-detail');
  const titleId = 'detail-title';
  const outcome = outcomeOf(r);
  // The resolution of an approval carries the approver's reason as its reason.
  const resolved = r.kind === 'approval' && (outcome === 'approved' || outcome === 'denied');
  const reasons = Array.isArray(r.reasons) ? r.reasons : [];
  const bundle = r.decision_id ? `/v1/receipts/${encodeURIComponent(r.decision_id)}` : null;
  clear(panel).append(
    el('div', { class: 'detail-head' },
      el('h2', { attrs: { id: titleId }, text: `Receipt #${index}` }),
      badge(outcome),
      el('span', { class: 'muted', text: r.kind === 'approval' ? 'approval resolution' : (r.kind ?? '') }),
      el('button', {
        class: 'button button-small button-quiet detail-close', text: 'Close',
        attrs: { type: 'button', 'aria-label': 'Close receipt' },
        on: { click: () => closeReceipt() },
      })),
    el('p', { class: `proof proof-${item.proof?.status ?? 'unknown'}` },
      el('span', { class: 'proof-label', text: 'Inclusion proof: ' }), proofBadge(item.proof), ' ', proofText(item.proof)),
    facts([
      ['Approver', approverOf(r)],
      ['Time', timeEl(r.time)],
      ["Approver's reason", resolved && reasons.length ? reasons.join('; ') : null, true],
      [r.kind === 'approval' ? 'Approval id' : 'Decision id', code(r.decision_id), true],
      ['Approval', r.kind === 'approval' ? null : code(r.approval?.id), true],
      ['Asked by decision', code(r.approval?.requested_by), true],
      ['Agent', agentEl(r.principal?.id, receiptVerified(r)), true],
      ['Identity', receiptVerified(r) ? 'verified by a task credential' : el('strong', { class: 'unverified-text', text: `${UNVERIFIED_TEXT} (no task credential)` }), true],
      ['On behalf of', r.principal?.on_behalf_of],
      ['Task', code(r.task?.id)],
      ['Delegation', chainEl(r.delegation), true],
      ['Tool', code(receiptTool(r))],
      ['Policies', list(r.policies)],
      ['Reasons', resolved ? null : list(reasons)],
      ['Errors', Array.isArray(r.errors) && r.errors.length ? json(r.errors) : null, true],
      ['Policy version', r.policy_version ? el('code', { attrs: { title: r.policy_version }, text: shortHash(r.policy_version) }) : null],
    ], 'facts facts-wide'),
    shadowEl(r),
    argumentsEl(r.arguments, { omittedBytes: r.arguments_omitted_bytes, sha256: r.arguments_sha256 }),
    el('details', { class: 'raw' },
      el('summary', { text: 'The receipt as signed' }),
      json(r),
      bundle ? el('p', {}, el('a', { attrs: { href: bundle, target: '_blank', rel: 'noopener noreferrer' }, text: 'Signed receipt with its inclusion proof and checkpoint (JSON)' })) : null));
  panel.hidden = false;
  $('explorer').classList.add('has-detail');
  if (!focus) return;
  panel.focus({ preventScroll: true });
  const top = panel.getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight * 0.6) panel.scrollIntoView({ block: 'start' });
}

function panelHasFocus() {
  const panel = $('receipt-detail');
  return panel === document.activeElement || panel.contains(document.activeElement);
}

function closeReceipt({ focus = true } = {}) {
  const panel = $('receipt-detail');
  const index = state.selected;
  // Focus inside the panel would be lost with it.
  const hadFocus = panelHasFocus();
  state.selected = null;
  clear(panel).hidden = true;
  $('explorer').classList.remove('has-detail');
  for (const row of $('results').tBodies[0].rows) row.classList.remove('selected');
  if (!focus && !hadFocus) return;
  const back = [...$('results').tBodies[0].rows].find((row) => row.dataset.index === String(index));
  (back?.querySelector('button') ?? $('receipts-title')).focus();
}

// ---------------------------------------------------------------- tasks

async function refreshTasks() {
  const data = await api('/v1/tasks?status=active');
  renderTasks(items(data));
}

function renderTasks(all) {
  // A task whose lifetime ran out is over, even before the server marks it.
  const now = serverNow();
  const listed = new Set(all.map((t) => t.id));
  for (const id of state.ended) if (!listed.has(id)) state.ended.delete(id);
  const tasks = all.filter((t) => (t.state ?? 'open') === 'open' && !(Date.parse(t.expires_at) <= now) && !state.ended.has(t.id));
  const ids = new Set(tasks.map((t) => t.id));
  for (const id of [...state.tasks.keys()]) {
    if (!ids.has(id)) removeTask(id);
  }
  const container = $('tasks');
  tasks.forEach((task, position) => {
    const signature = JSON.stringify([task.credentials, task.history?.length, task.state]);
    let entry = state.tasks.get(task.id);
    if (!entry) {
      entry = { task, li: taskCard(task), signature };
      state.tasks.set(task.id, entry);
    } else if (entry.signature !== signature) {
      entry.task = task;
      entry.signature = signature;
      entry.li.querySelector('.task-body').replaceWith(taskBody(task));
    }
    const at = container.children[position];
    if (at !== entry.li) container.insertBefore(entry.li, at ?? null);
  });
  $('tasks-empty').hidden = state.tasks.size > 0;
}

function removeTask(id, message) {
  const entry = state.tasks.get(id);
  if (!entry) return;
  state.tasks.delete(id);
  const hadFocus = entry.li.contains(document.activeElement);
  const next = entry.li.nextElementSibling ?? entry.li.previousElementSibling;
  entry.li.remove();
  if (hadFocus) (next?.querySelector('h2') ?? $('tasks-title')).focus();
  if (message) announce(message);
  $('tasks-empty').hidden = state.tasks.size > 0;
}

/** The delegation tree: credentials nested under their parents. */
function delegationTree(credentials) {
  const creds = Array.isArray(credentials) ? credentials : [];
  const children = new Map();
  const known = new Set(creds.map((c) => c.revocation_id));
  for (const c of creds) {
    const parent = c.parent_revocation_id && known.has(c.parent_revocation_id) ? c.parent_revocation_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(c);
  }
  const build = (parent, depth) => {
    const kids = children.get(parent) ?? [];
    if (kids.length === 0 || depth > 32) return null;
    return el('ul', { class: depth === 0 ? 'tree' : 'tree-branch' }, kids.map((c) => el('li', { class: 'tree-node' },
      el('div', { class: `tree-item${c.revoked ? ' tree-item-revoked' : ''}` },
        el('code', { class: 'tree-agent', text: c.agent ?? '' }),
        el('span', { class: 'tree-meta', text: `depth ${c.depth ?? '?'}` }),
        c.revoked ? badge('denied', { label: 'revoked' }) : null,
        el('span', { class: 'tree-tools' }, (c.tools ?? []).join(', ')),
        el('span', { class: 'tree-meta' }, 'until ', timeEl(c.expires_at))),
      build(c.revocation_id, depth + 1))));
  };
  return build(null, 0) ?? el('p', { class: 'muted', text: 'No credential issued.' });
}

function taskBody(task) {
  const history = Array.isArray(task.history) ? task.history : [];
  const last = history[history.length - 1];
  return el('div', { class: 'task-body' },
    facts([
      ['Task id', code(task.id)],
      ['Agent', code(task.agent)],
      ['On behalf of', task.on_behalf_of],
      ['Started', timeEl(task.created_at)],
      ['Tools', list(task.tools)],
      ['Labels', list(task.labels)],
      ['Decisions', history.length > 0 ? `${history.length} (last: ${last.tool} → ${last.decision})` : 'none yet'],
    ]),
    el('h3', { class: 'label', text: 'Delegation tree' }),
    el('div', { attrs: { role: 'group', 'aria-label': `Delegation tree of ${task.intent ?? task.id}` } }, delegationTree(task.credentials)));
}

function taskCard(task) {
  const titleId = uid('task-title');
  const error = el('div', { class: 'form-error', attrs: { role: 'alert', hidden: true } });
  const endButton = el('button', { class: 'button button-deny', text: 'End task', attrs: { type: 'button' } });
  const confirm = el('div', { class: 'confirm', attrs: { hidden: true, role: 'group', 'aria-label': 'Confirm ending the task' } });
  const count = Array.isArray(task.credentials) ? task.credentials.length : 0;
  const yes = el('button', { class: 'button button-deny', text: 'End task now', attrs: { type: 'button' } });
  const no = el('button', { class: 'button button-quiet', text: 'Cancel', attrs: { type: 'button' } });
  append(confirm, [
    el('p', { text: `End this task? Every credential issued under it${count ? ` (${count})` : ''} is revoked at once, and its agents' next calls are refused.` }),
    el('div', { class: 'actions' }, yes, no),
  ]);
  endButton.addEventListener('click', () => {
    endButton.hidden = true;
    confirm.hidden = false;
    yes.focus();
  });
  no.addEventListener('click', () => {
    if (confirm.dataset.busy) return;
    confirm.hidden = true;
    endButton.hidden = false;
    endButton.focus();
  });
  yes.addEventListener('click', async () => {
    if (confirm.dataset.busy) return;
    setBusy(confirm, [yes, no], true);
    showError(error, null);
    try {
      const ended = await api(`/v1/tasks/${encodeURIComponent(task.id)}`, { method: 'DELETE' });
      state.ended.add(task.id);
      const revoked = Array.isArray(ended?.revoked) ? ended.revoked.length : 0;
      removeTask(task.id, `Task ended: ${task.intent ?? task.id}. ${revoked} credential${revoked === 1 ? '' : 's'} revoked.`);
    } catch (e) {
      if (e.status !== 401) showError(error, `The task was not ended: ${e.message}.`);
      setBusy(confirm, [yes, no], false);
    }
  });
  const article = el('article', { class: 'card task', attrs: { 'aria-labelledby': titleId } },
    el('header', { class: 'approval-head' },
      el('h2', { attrs: { id: titleId, tabindex: -1 }, text: task.intent ?? task.id }),
      countdownEl(task.expires_at, 'Ends in')),
    taskBody(task),
    error,
    el('div', { class: 'actions task-actions' }, endButton, confirm));
  return el('li', { data: { taskId: task.id } }, article);
}

// ---------------------------------------------------------------- start

function init() {
  $('signin-form').addEventListener('submit', onSignIn);
  $('sign-out').addEventListener('click', () => signOut('You signed out.'));
  $('feed-toggle').addEventListener('click', onFeedToggle);
  $('search-form').addEventListener('submit', onSearch);
  $('search-form').addEventListener('reset', () => {
    window.setTimeout(() => onSearch(), 0);
  });
  $('results-more').addEventListener('click', () => {
    if (state.search) runSearch(state.search, { append: true });
  });
  window.addEventListener('hashchange', () => route({ focus: true }));
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refreshNow();
  });
  window.setInterval(tickCountdowns, 1000);

  let saved = null;
  try {
    saved = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    saved = null;
  }
  if (saved) {
    signIn(saved).catch((e) => {
      if (e.status === 401) signOut('The server no longer accepts your approver token. Sign in again.');
      else signOut(`Cannot sign in: ${e.message}.`);
    });
  } else {
    showView('signin');
    $('signin-token').focus();
  }
}

init();
