// The Warren web console: a single-page app over the management API (/api), hash-routed.
//
// Safety rules this file keeps (crates/console/src/lib.rs tests the mechanical ones):
// - Every string from the server (names of queues, exchanges, vhosts, users, header values,
//   payloads, error reasons) reaches the page through textContent or a text node, via h().
//   Nothing is ever parsed as markup, and the Content-Security-Policy forbids inline script.
// - Credentials live in sessionStorage for this tab's session only, are sent as a Basic
//   Authorization header to this origin, and never appear in a URL.
// - Lists always ask the server for one page (page_size <= PAGE_SIZE_MAX), so 10,000 queues
//   cost the browser one page of rows.
// - Every failed call shows the API's `reason` to the user.
'use strict';
(() => {
  const PAGE_SIZES = [20, 50, 100];
  const PAGE_SIZE_MAX = 100;
  const REFRESH_MS = 5000;
  const SAMPLE_MS = 5000;
  const SAMPLES_MAX = 120; // ten minutes of overview samples at SAMPLE_MS
  const MESSAGES_SHOWN_MAX = 5;
  const RATE_KEYS = ['publish', 'confirm', 'deliver_get', 'ack', 'redeliver', 'return_unroutable'];
  const CHART_COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700'];

  const state = {
    auth: sessionStorage.getItem('warren.auth'),
    user: null, // {name, tags}
    vhost: sessionStorage.getItem('warren.vhost') || '',
    generation: 0, // bumped on each render; stale async work checks it
    timers: [],
    samples: [], // {t, overview}
    sampler: null,
    exchangeTypes: ['direct', 'fanout', 'topic', 'headers'],
  };

  // ---------------------------------------------------------------- DOM helpers

  const $ = (sel) => document.querySelector(sel);

  // Creates an element. props: attributes, plus `class`, `text`, `on<event>` handlers and the
  // live properties `value`/`checked`/`selected`. Children: nodes or strings (as text nodes).
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    add(el, children);
    return el;
  }

  // Replaces el's children with these (nodes, strings as text, arrays flattened).
  const put = (el, ...children) => { el.replaceChildren(); return add(el, children); };

  function add(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const enc = encodeURIComponent;
  // The API and the console's URLs name the default exchange amq.default.
  const xPath = (name) => (name === '' ? 'amq.default' : name);
  const xLabel = (name) => (name === '' ? '(AMQP default)' : name);
  const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '');
  const fmtRate = (r) => (typeof r === 'number' ? `${r.toFixed(1)}/s` : '');
  const rateOf = (o, key) => o && o.message_stats && o.message_stats[`${key}_details`]
    && o.message_stats[`${key}_details`].rate;

  function fmtDuration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hh = Math.floor(s / 3600); s -= hh * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : `${m}m ${s}s`;
  }

  function table(columns, rows, opts = {}) {
    const t = h('table', { class: 'list', id: opts.id });
    // A column with `sort` (a dotted API field) sorts on the server when its title is clicked.
    const title = (c) => {
      if (!c.sort || !opts.onSort) return c.title;
      const mark = opts.sort === c.sort ? (opts.reverse ? ' ▼' : ' ▲') : '';
      return h('button', { type: 'button', class: 'sort', 'data-sort': c.sort, onclick: () => opts.onSort(c.sort) }, c.title, mark);
    };
    t.append(h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.cls }, title(c))))));
    const body = h('tbody');
    if (rows.length === 0) {
      body.append(h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, opts.empty || 'Nothing to show.')));
    }
    for (const row of rows) {
      body.append(h('tr', null, columns.map((c) => h('td', { class: c.cls }, c.value(row)))));
    }
    t.append(body);
    return t;
  }

  // A two-column table of label → value.
  function facts(pairs) {
    return h('table', { class: 'facts' },
      h('tbody', null, pairs.filter((p) => p).map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v)))));
  }

  const json = (v) => h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
  const link = (href, text) => h('a', { href }, text);
  const section = (title, ...children) => h('section', { class: 'panel' }, h('h2', null, title), children);

  // ---------------------------------------------------------------- messages

  function flash(text, kind = 'info') {
    const box = $('#messages');
    const m = h('div', { class: `msg ${kind}`, role: kind === 'error' ? 'alert' : null },
      h('span', { class: 'text' }, text),
      h('button', { type: 'button', class: 'dismiss', 'aria-label': 'Dismiss', onclick: () => m.remove() }, '×'));
    box.append(m);
    while (box.children.length > MESSAGES_SHOWN_MAX) box.firstChild.remove();
    if (kind === 'info') setTimeout(() => m.remove(), 4000);
  }

  function showError(e) {
    if (e instanceof ApiError) flash(`${e.status} ${e.error}: ${e.message}`, 'error');
    else flash(`Error: ${e && e.message ? e.message : e}`, 'error');
  }

  // Runs an action from a button or form: disables it meanwhile, reports any error.
  async function act(button, fn) {
    if (button) button.disabled = true;
    try {
      return await fn();
    } catch (e) {
      showError(e);
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, error, reason) {
      super(reason);
      this.status = status;
      this.error = error;
    }
  }

  function basic(user, pass) {
    const bytes = new TextEncoder().encode(`${user}:${pass}`);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  async function api(method, path, body, { auth = state.auth, headers = {}, raw = false } = {}) {
    const init = {
      method,
      // 'omit': no cookies, and no browser password prompt on a 401; our own header still goes.
      credentials: 'omit',
      cache: 'no-store',
      headers: { Authorization: `Basic ${auth}`, ...headers },
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(`/api${path}`, init);
    } catch (e) {
      throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
    }
    const text = await resp.text();
    if (!resp.ok) {
      let error = resp.statusText || 'error';
      let reason = text;
      try {
        const j = JSON.parse(text);
        error = j.error || error;
        reason = j.reason || text;
      } catch (_) { /* not JSON: show the text as it is */ }
      if (resp.status === 401 && auth === state.auth && reason === 'Login failed') {
        // The password changed or the user went away: back to the login form.
        logout('Your login is no longer accepted.');
      }
      throw new ApiError(resp.status, error, reason || `HTTP ${resp.status}`);
    }
    if (raw) return text;
    return text ? JSON.parse(text) : null;
  }

  const isTagged = (...tags) => state.user && state.user.tags.some((t) => tags.includes(t));
  const isAdmin = () => isTagged('administrator');
  const isMonitor = () => isTagged('administrator', 'monitoring');

  let vhostNames = [];
  async function loadVhosts() {
    const list = await api('GET', '/vhosts?columns=name');
    vhostNames = list.map((v) => v.name);
    const sel = $('#vhost-filter');
    put(sel, h('option', { value: '' }, 'All'),
      vhostNames.map((v) => h('option', { value: v, selected: v === state.vhost }, v)));
    if (state.vhost && !vhostNames.includes(state.vhost)) setVhost('');
    return vhostNames;
  }

  function setVhost(v) {
    state.vhost = v;
    sessionStorage.setItem('warren.vhost', v);
    $('#vhost-filter').value = v;
  }

  function vhostSelect(name = 'vhost') {
    const chosen = state.vhost || (vhostNames.includes('/') ? '/' : vhostNames[0]);
    return h('select', { name }, vhostNames.map((v) => h('option', { value: v, selected: v === chosen }, v)));
  }

  // ---------------------------------------------------------------- login

  async function login(user, pass) {
    const auth = basic(user, pass);
    const who = await api('GET', '/whoami', undefined, { auth });
    // /whoami answers any user; the console needs a management tag, as the API does.
    await api('GET', '/overview', undefined, { auth });
    state.auth = auth;
    state.user = who;
    sessionStorage.setItem('warren.auth', auth);
    await start();
  }

  function logout(why) {
    state.generation += 1; // pages still loading must not draw
    state.auth = null;
    state.user = null;
    sessionStorage.removeItem('warren.auth');
    stopTimers();
    if (state.sampler) clearInterval(state.sampler);
    state.sampler = null;
    state.samples = [];
    $('#top').hidden = true;
    $('#main').replaceChildren();
    $('#login').hidden = false;
    $('#login-pass').value = '';
    if (why) flash(why, 'error');
  }

  async function start() {
    state.user = await api('GET', '/whoami');
    $('#login').hidden = true;
    $('#top').hidden = false;
    $('#whoami').textContent = `${state.user.name} (${state.user.tags.join(', ') || 'no tags'})`;
    $('#nav-admin').hidden = !isTagged('administrator', 'policymaker');
    await loadVhosts().catch(showError);
    startSampler();
    render();
  }

  // ---------------------------------------------------------------- overview samples

  function startSampler() {
    if (state.sampler) return;
    const sample = async () => {
      try {
        const overview = await api('GET', '/overview');
        state.samples.push({ t: Date.now(), overview });
        if (state.samples.length > SAMPLES_MAX) state.samples.shift();
        for (const fn of sampleListeners) fn();
      } catch (e) {
        if (e.status !== 401) showError(e);
      }
    };
    sample();
    state.sampler = setInterval(sample, SAMPLE_MS);
  }
  const sampleListeners = new Set();

  // Rates per second at sample i: the server's *_details.rate when it reports one, else the
  // change of the counter since the previous sample.
  function ratesAt(i) {
    const cur = state.samples[i];
    const prev = state.samples[i - 1];
    const ms = cur.overview.message_stats || {};
    const out = {};
    for (const k of RATE_KEYS) {
      const d = ms[`${k}_details`];
      if (d && typeof d.rate === 'number') out[k] = d.rate;
      else if (prev && typeof ms[k] === 'number') {
        const before = (prev.overview.message_stats || {})[k];
        const secs = (cur.t - prev.t) / 1000;
        out[k] = typeof before === 'number' && secs > 0 ? Math.max(0, (ms[k] - before) / secs) : 0;
      } else out[k] = 0;
    }
    return out;
  }

  // A line chart on a canvas: series [{label, get(i) -> number}] over samples ({t, ...}, oldest
  // first; the overview's by default).
  function chart(title, series, unit, samples = () => state.samples) {
    const canvas = h('canvas', { width: 560, height: 180, class: 'chart', 'aria-label': title });
    const legend = h('ul', { class: 'legend' });
    const draw = () => {
      const points = samples();
      const n = points.length;
      const values = series.map((s) => points.map((_, i) => s.get(i) || 0));
      // Headroom above the largest value, so a flat line is not drawn on the frame.
      const max = Math.max(1, ...values.flat()) * 1.2;
      const ctx = canvas.getContext('2d');
      const W = canvas.width; const H = canvas.height; const L = 50; const B = 20;
      ctx.clearRect(0, 0, W, H);
      ctx.strokeStyle = '#c8ccd0';
      ctx.fillStyle = '#57606a';
      ctx.font = '11px sans-serif';
      ctx.beginPath(); ctx.moveTo(L, 5); ctx.lineTo(L, H - B); ctx.lineTo(W - 5, H - B); ctx.stroke();
      ctx.fillText(fmtNum(Math.round(max * 10) / 10), 2, 12);
      ctx.fillText('0', L - 12, H - B);
      const span = (SAMPLES_MAX - 1) * SAMPLE_MS;
      ctx.fillText(`-${Math.round(span / 60000)} min`, L, H - 5);
      ctx.fillText('now', W - 30, H - 5);
      const now = n ? points[n - 1].t : Date.now();
      const x = (i) => L + ((W - 5 - L) * (span - (now - points[i].t))) / span;
      const y = (v) => H - B - ((H - B - 5) * v) / max;
      values.forEach((vals, si) => {
        ctx.strokeStyle = CHART_COLORS[si % CHART_COLORS.length];
        ctx.lineWidth = 2;
        ctx.beginPath();
        vals.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
        if (n === 1) ctx.lineTo(x(0) - 8, y(vals[0])); // one sample: a short dash at "now"
        ctx.stroke();
      });
      put(legend, series.map((s, si) => h('li', null,
        h('span', { class: `swatch s${si}` }), `${s.label}: `,
        h('b', null, n ? (unit === '/s' ? fmtRate(values[si][n - 1]) : fmtNum(values[si][n - 1])) : '–'))));
    };
    draw();
    return { el: h('div', { class: 'chart-box' }, h('h3', null, title), canvas, legend), draw };
  }

  // A chart of one object's rates since the page opened: polls `path` every REFRESH_MS (as the
  // queue page does) and plots `series` [{label, key}]: the API's `<key>_details.rate` from
  // message_stats, or, for a top-level counter (`counter: true`, e.g. recv_oct), its growth
  // between two polls.
  function objectRatesChart(ctx, title, path, series) {
    const history = [];
    const value = (i, s) => {
      if (!s.counter) return rateOf(history[i].o, s.key) || 0;
      if (i === 0) return 0;
      const dt = (history[i].t - history[i - 1].t) / 1000;
      const dv = (history[i].o[s.key] || 0) - (history[i - 1].o[s.key] || 0);
      return dt > 0 && dv > 0 ? dv / dt : 0;
    };
    const c = chart(title, series.map((s) => ({ label: s.label, get: (i) => value(i, s) })), '/s', () => history);
    const poll = async () => {
      let o;
      try {
        o = await api('GET', path);
      } catch (e) {
        return; // gone or unreachable: keep what was drawn
      }
      if (!ctx.alive()) return;
      history.push({ t: Date.now(), o });
      if (history.length > SAMPLES_MAX) history.shift();
      c.draw();
    };
    return {
      el: h('div', { class: 'charts' }, c.el),
      start: async () => { await poll(); if (ctx.alive()) ctx.every(REFRESH_MS, poll); },
    };
  }

  // ---------------------------------------------------------------- routing

  const routes = [
    [/^\/?$/, overviewPage, 'overview'],
    [/^\/connections$/, connectionsPage, 'connections'],
    [/^\/connections\/([^/]+)$/, connectionPage, 'connections'],
    [/^\/channels$/, channelsPage, 'channels'],
    [/^\/channels\/([^/]+)$/, channelPage, 'channels'],
    [/^\/exchanges$/, exchangesPage, 'exchanges'],
    [/^\/exchanges\/([^/]+)\/([^/]+)$/, exchangePage, 'exchanges'],
    [/^\/queues$/, queuesPage, 'queues'],
    [/^\/queues\/([^/]+)\/([^/]+)$/, queuePage, 'queues'],
    [/^\/admin$/, adminPage, 'admin'],
  ];

  function stopTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    sampleListeners.clear();
  }

  function render() {
    if (!state.auth) return;
    stopTimers();
    const gen = ++state.generation;
    const path = (location.hash || '#/').slice(1);
    const main = $('#main');
    main.replaceChildren();
    const ctx = {
      alive: () => gen === state.generation,
      every: (ms, fn) => state.timers.push(setInterval(() => { if (gen === state.generation) fn(); }, ms)),
    };
    for (const [re, page, nav] of routes) {
      const m = re.exec(path);
      if (!m) continue;
      for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === nav);
      let args;
      try {
        args = m.slice(1).map(decodeURIComponent);
      } catch (_) {
        break;
      }
      Promise.resolve(page(main, ctx, ...args)).catch((e) => { if (ctx.alive()) showError(e); });
      return;
    }
    main.append(h('h1', null, 'Not found'), h('p', null, 'No such page. ', link('#/', 'Overview')));
  }

  const go = (hash) => { if (location.hash === hash) render(); else location.hash = hash; };

  // ---------------------------------------------------------------- paginated lists

  // A list the server filters and paginates. opts: {id, path() -> API path, columns, empty}.
  function pagedList(ctx, opts) {
    const st = { page: 1, pageSize: 20, name: '', regex: false, sort: '', reverse: false, last: null };
    const filter = h('input', { type: 'search', name: 'filter', placeholder: 'Filter by name', 'aria-label': 'Filter by name' });
    const regex = h('input', { type: 'checkbox', name: 'regex' });
    const size = h('select', { name: 'page_size', 'aria-label': 'Page size' },
      PAGE_SIZES.map((n) => h('option', { value: n, selected: n === st.pageSize }, `${n} per page`)));
    const info = h('span', { class: 'page-info' });
    const prev = h('button', { type: 'button', class: 'prev', onclick: () => { st.page -= 1; load(); } }, '‹ Previous');
    const next = h('button', { type: 'button', class: 'next', onclick: () => { st.page += 1; load(); } }, 'Next ›');
    const holder = h('div', { class: 'table-holder' });
    let debounce = null;
    filter.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { st.name = filter.value; st.page = 1; load(); }, 250);
    });
    regex.addEventListener('change', () => { st.regex = regex.checked; st.page = 1; load(); });
    size.addEventListener('change', () => { st.pageSize = Math.min(PAGE_SIZE_MAX, Number(size.value)); st.page = 1; load(); });

    async function load() {
      const q = new URLSearchParams({ page: String(st.page), page_size: String(st.pageSize) });
      if (st.name) {
        q.set('name', st.name);
        if (st.regex) q.set('use_regex', 'true');
      }
      if (st.sort) {
        q.set('sort', st.sort);
        q.set('sort_reverse', String(st.reverse));
      }
      let data;
      try {
        data = await api('GET', `${opts.path()}?${q}`);
      } catch (e) {
        if (ctx.alive()) showError(e);
        return;
      }
      if (!ctx.alive()) return;
      if (data.page_count > 0 && st.page > data.page_count) {
        st.page = data.page_count;
        load();
        return;
      }
      const key = JSON.stringify(data);
      if (key === st.last) return; // unchanged: keep the DOM (and what the user points at)
      st.last = key;
      const onSort = (field) => {
        st.reverse = st.sort === field ? !st.reverse : false;
        st.sort = field;
        st.page = 1;
        st.last = null;
        load();
      };
      put(holder, table(opts.columns(), data.items,
        { id: opts.id, empty: opts.empty, sort: st.sort, reverse: st.reverse, onSort }));
      const filtered = data.filtered_count !== data.total_count ? ` (${fmtNum(data.filtered_count)} match)` : '';
      info.textContent = `Page ${fmtNum(Math.max(1, data.page))} of ${fmtNum(Math.max(1, data.page_count))} · ${fmtNum(data.total_count)} in all${filtered}`;
      prev.disabled = st.page <= 1;
      next.disabled = st.page >= data.page_count;
    }
    ctx.every(REFRESH_MS, load);
    const el = h('div', { class: 'paged' },
      h('div', { class: 'list-controls' }, filter, h('label', null, regex, ' Regex'), size, prev, next, info),
      holder);
    return { el, load: () => { st.last = null; return load(); } };
  }

  // The API path of a list, narrowed to the chosen vhost.
  const listPath = (what) => (state.vhost ? `/${what}/${enc(state.vhost)}` : `/${what}`);
  const vhostListPath = (what) => (state.vhost ? `/vhosts/${enc(state.vhost)}/${what}` : `/${what}`);

  // ---------------------------------------------------------------- arguments editor

  // Rows of key, value and type, for x-arguments, binding arguments, message headers and
  // policy definitions. value() returns the object, typed.
  function argsEditor(name, hints = []) {
    const rows = h('tbody');
    const addRow = (k = '', v = '', type = 'string') => {
      const tr = h('tr', { class: 'arg' },
        h('td', null, h('input', { name: `${name}-key`, 'aria-label': 'Key', value: k, list: hints.length ? `${name}-hints` : null })),
        h('td', null, h('input', { name: `${name}-value`, 'aria-label': 'Value', value: v })),
        h('td', null, h('select', { name: `${name}-type`, 'aria-label': 'Type' },
          ['string', 'number', 'boolean', 'list'].map((t) => h('option', { value: t, selected: t === type }, t)))),
        h('td', null, h('button', { type: 'button', class: 'small', onclick: () => tr.remove() }, 'Remove')));
      rows.append(tr);
    };
    addRow();
    const el = h('div', { class: 'args' },
      h('table', { class: 'args-table' }, rows),
      h('button', { type: 'button', class: 'small', onclick: () => addRow() }, 'Add row'),
      hints.length ? h('datalist', { id: `${name}-hints` }, hints.map((x) => h('option', { value: x }))) : null);
    const value = () => {
      const out = {};
      for (const tr of rows.querySelectorAll('tr')) {
        const [k, v, t] = tr.querySelectorAll('input, select');
        if (!k.value) continue;
        if (t.value === 'number') {
          const n = Number(v.value);
          if (v.value.trim() === '' || Number.isNaN(n)) throw new Error(`${k.value}: '${v.value}' is not a number`);
          out[k.value] = n;
        } else if (t.value === 'boolean') {
          if (!['true', 'false'].includes(v.value)) throw new Error(`${k.value}: use true or false`);
          out[k.value] = v.value === 'true';
        } else if (t.value === 'list') {
          out[k.value] = v.value.split(',').map((s) => s.trim()).filter((s) => s);
        } else out[k.value] = v.value;
      }
      return out;
    };
    return { el, value, reset: () => { rows.replaceChildren(); addRow(); } };
  }

  const field = (label, input) => h('label', { class: 'field' }, h('span', null, label), input);
  const checkbox = (name, checked = false) => h('input', { type: 'checkbox', name, checked });
  const form = (id, onsubmit, ...children) => {
    const f = h('form', { id, class: 'form' }, children);
    f.addEventListener('submit', (ev) => {
      ev.preventDefault();
      act(f.querySelector('button[type=submit]'), () => onsubmit(f));
    });
    return f;
  };
  const input = (f, name) => f.elements.namedItem(name);

  function confirmThen(question, fn) {
    // eslint-disable-next-line no-alert
    if (window.confirm(question)) return fn();
    return undefined;
  }

  // ---------------------------------------------------------------- overview

  async function overviewPage(main, ctx) {
    main.append(h('h1', null, 'Overview'));
    const totals = h('div', { class: 'totals' });
    const depth = chart('Queued messages', [
      { label: 'Ready', get: (i) => state.samples[i].overview.queue_totals.messages_ready },
      { label: 'Unacked', get: (i) => state.samples[i].overview.queue_totals.messages_unacknowledged },
      { label: 'Total', get: (i) => state.samples[i].overview.queue_totals.messages },
    ]);
    const rates = chart('Message rates', [
      { label: 'Publish', get: (i) => ratesAt(i).publish },
      { label: 'Confirm', get: (i) => ratesAt(i).confirm },
      { label: 'Deliver / get', get: (i) => ratesAt(i).deliver_get },
      { label: 'Ack', get: (i) => ratesAt(i).ack },
    ], '/s');
    const nodes = h('div');
    const listeners = h('div');
    main.append(section('Totals', totals), h('div', { class: 'charts' }, depth.el, rates.el),
      section('Node', nodes), section('Listeners', listeners));

    const drawTotals = () => {
      const last = state.samples[state.samples.length - 1];
      if (!last) return;
      const o = last.overview;
      const card = (label, v) => h('div', { class: 'card' }, h('div', { class: 'num' }, fmtNum(v)), h('div', null, label));
      put(totals,
        card('Connections', o.object_totals.connections), card('Channels', o.object_totals.channels),
        card('Exchanges', o.object_totals.exchanges), card('Queues', o.object_totals.queues),
        card('Consumers', o.object_totals.consumers), card('Messages', o.queue_totals.messages),
        card('Ready', o.queue_totals.messages_ready), card('Unacked', o.queue_totals.messages_unacknowledged));
      put(listeners, table([
        { title: 'Protocol', value: (l) => l.protocol },
        { title: 'Address', value: (l) => l.ip_address },
        { title: 'Port', value: (l) => String(l.port) },
      ], o.listeners || []));
      depth.draw();
      rates.draw();
    };
    sampleListeners.add(drawTotals);
    drawTotals();

    const loadNodes = async () => {
      if (!isMonitor()) {
        put(nodes, h('p', { class: 'note' }, 'Node details need the monitoring or administrator tag.'));
        return;
      }
      let list;
      try {
        list = await api('GET', '/nodes');
      } catch (e) {
        if (ctx.alive()) showError(e);
        return;
      }
      if (!ctx.alive()) return;
      const size = (b) => (b >= 1073741824 ? `${(b / 1073741824).toFixed(1)} GiB` : `${(b / 1048576).toFixed(1)} MiB`);
      // "used (limit)" when the node reports the value, "n/a" when it does not.
      const of = (v, fmt, limit, what) => (typeof v !== 'number' ? 'n/a'
        : `${fmt(v)}${typeof limit === 'number' && limit > 0 ? ` (${what} ${fmt(limit)})` : ''}`);
      put(nodes, ...list.map((n) => {
        const alarms = [n.mem_alarm && 'memory', n.disk_free_alarm && 'disk'].filter((a) => a);
        return facts([
          ['Name', n.name],
          ['Running', n.running ? 'yes' : 'no (stop_app)'],
          ['Alarms', h('span', { class: alarms.length ? 'alarm' : 'ok', id: 'alarms' }, alarms.length ? `${alarms.join(', ')} alarm in effect` : 'none')],
          ['Uptime', fmtDuration(n.uptime || 0)],
          ['Memory used', of(n.mem_used, size, n.mem_limit, 'alarm above')],
          ['Disk free', of(n.disk_free, size, n.disk_free_limit, 'alarm below')],
          ['File descriptors', of(n.fd_used, fmtNum, n.fd_total, 'of')],
          ['Sockets', of(n.sockets_used, fmtNum, n.sockets_total, 'of')],
          ['Processors', String(n.processors)],
          ['OS pid', n.os_pid],
        ]);
      }));
    };
    await loadNodes();
    ctx.every(REFRESH_MS, loadNodes);
  }

  // ---------------------------------------------------------------- connections and channels

  function closeConnection(name, reason) {
    return api('DELETE', `/connections/${enc(name)}`, undefined,
      { headers: reason ? { 'X-Reason': reason } : {} });
  }

  async function connectionsPage(main, ctx) {
    main.append(h('h1', null, 'Connections'));
    const list = pagedList(ctx, {
      id: 'connections',
      path: () => vhostListPath('connections'),
      empty: 'No connections.',
      columns: () => [
        { title: 'Name', sort: 'name', value: (c) => link(`#/connections/${enc(c.name)}`, c.name) },
        { title: 'User', sort: 'user', value: (c) => c.user },
        { title: 'Virtual host', value: (c) => c.vhost },
        { title: 'Client', value: (c) => {
          const p = c.client_properties || {};
          return [p.product, p.version].filter((x) => typeof x === 'string').join(' ');
        } },
        { title: 'Channels', cls: 'n', value: (c) => fmtNum(c.channels) },
        { title: 'State', value: (c) => c.state },
        { title: '', value: (c) => h('button', { type: 'button', class: 'small danger', onclick: (ev) => act(ev.target, async () => {
          await closeConnection(c.name, 'Closed via management plugin');
          flash(`Connection ${c.name} closed.`);
          await list.load();
        }) }, 'Close') },
      ],
    });
    main.append(list.el);
    await list.load();
  }

  async function connectionPage(main, ctx, name) {
    main.append(h('h1', null, 'Connection ', h('span', { class: 'name' }, name)));
    const [c, chans] = await Promise.all([
      api('GET', `/connections/${enc(name)}`),
      api('GET', `/connections/${enc(name)}/channels`),
    ]);
    if (!ctx.alive()) return;
    main.append(section('Details', facts([
      ['User', c.user], ['Virtual host', c.vhost], ['Protocol', c.protocol],
      ['Peer', `${c.peer_host}:${c.peer_port}`], ['Local', `${c.host}:${c.port}`],
      ['Authentication', c.auth_mechanism], ['Heartbeat', `${c.timeout}s`],
      ['frame_max', fmtNum(c.frame_max)], ['channel_max', fmtNum(c.channel_max)],
      ['Connected at', c.connected_at ? new Date(c.connected_at).toISOString() : ''],
      c.user_provided_name ? ['Name given by client', c.user_provided_name] : null,
    ])));
    const io = objectRatesChart(ctx, 'Data rates', `/connections/${enc(name)}`, [
      { label: 'Received (bytes)', key: 'recv_oct', counter: true },
      { label: 'Sent (bytes)', key: 'send_oct', counter: true },
    ]);
    main.append(io.el);
    await io.start();
    if (!ctx.alive()) return;
    main.append(section('Client properties', json(c.client_properties || {})));
    main.append(section('Channels', channelTable(chans)));
    main.append(section('Close this connection', form('close-connection', async (f) => {
      await confirmThen(`Close connection ${name}?`, async () => {
        await closeConnection(name, input(f, 'reason').value);
        flash(`Connection ${name} closed.`);
        go('#/connections');
      });
    }, field('Reason', h('input', { name: 'reason', value: 'Closed via management plugin' })),
    h('button', { type: 'submit', class: 'danger' }, 'Force close'))));
  }

  function channelColumns() {
    return [
      { title: 'Channel', value: (c) => link(`#/channels/${enc(c.name)}`, c.name) },
      { title: 'Connection', value: (c) => link(`#/connections/${enc(c.connection_details.name)}`, c.connection_details.name) },
      { title: 'User', value: (c) => c.user },
      { title: 'Virtual host', value: (c) => c.vhost },
      { title: 'Mode', value: (c) => [c.confirm && 'confirm', c.transactional && 'tx'].filter((x) => x).join(', ') },
      { title: 'Prefetch', cls: 'n', value: (c) => fmtNum(c.prefetch_count) },
      { title: 'Consumers', cls: 'n', value: (c) => fmtNum(c.consumer_count) },
      { title: 'Unacked', cls: 'n', value: (c) => fmtNum(c.messages_unacknowledged) },
      { title: 'Unconfirmed', cls: 'n', value: (c) => fmtNum(c.messages_unconfirmed) },
      { title: 'Publish', cls: 'n', value: (c) => fmtRate(rateOf(c, 'publish')) },
      { title: 'Deliver / get', cls: 'n', value: (c) => fmtRate(rateOf(c, 'deliver_get')) },
    ];
  }
  const channelTable = (rows) => table(channelColumns(), rows, { empty: 'No channels.' });

  async function channelPage(main, ctx, name) {
    main.append(h('h1', null, 'Channel ', h('span', { class: 'name' }, name)));
    const c = await api('GET', `/channels/${enc(name)}`);
    if (!ctx.alive()) return;
    const conn = c.connection_details || {};
    main.append(section('Details', facts([
      ['Connection', link(`#/connections/${enc(conn.name)}`, conn.name)],
      ['Number', String(c.number)], ['User', c.user], ['Virtual host', c.vhost], ['State', c.state],
      ['Mode', [c.confirm && 'confirm', c.transactional && 'transactional'].filter((x) => x).join(', ') || 'normal'],
      ['Prefetch', `${fmtNum(c.prefetch_count)} per consumer, ${fmtNum(c.global_prefetch_count)} per channel`],
      ['Unacked', fmtNum(c.messages_unacknowledged)], ['Unconfirmed', fmtNum(c.messages_unconfirmed)],
      ['Rates', ['publish', 'confirm', 'deliver_get', 'ack'].map((k) => `${k} ${fmtRate(rateOf(c, k) || 0)}`).join(' · ')],
    ])));
    const rates = objectRatesChart(ctx, 'Message rates', `/channels/${enc(name)}`, [
      { label: 'Publish', key: 'publish' },
      { label: 'Confirm', key: 'confirm' },
      { label: 'Deliver / get', key: 'deliver_get' },
      { label: 'Ack', key: 'ack' },
    ]);
    main.append(rates.el);
    await rates.start();
    if (!ctx.alive()) return;
    const all = await api('GET', `/consumers/${enc(c.vhost)}`);
    if (!ctx.alive()) return;
    main.append(section('Consumers', table([
      { title: 'Queue', value: (x) => link(`#/queues/${enc(x.queue.vhost)}/${enc(x.queue.name)}`, x.queue.name) },
      { title: 'Consumer tag', value: (x) => x.consumer_tag },
      { title: 'Ack required', value: (x) => (x.ack_required ? 'yes' : 'no') },
      { title: 'Exclusive', value: (x) => (x.exclusive ? 'yes' : 'no') },
      { title: 'Prefetch', cls: 'n', value: (x) => fmtNum(x.prefetch_count) },
    ], all.filter((x) => x.channel_details.name === name), { id: 'channel-consumers', empty: 'No consumers.' })));
  }

  async function channelsPage(main, ctx) {
    main.append(h('h1', null, 'Channels'));
    const list = pagedList(ctx, { id: 'channels', path: () => vhostListPath('channels'), columns: channelColumns, empty: 'No channels.' });
    main.append(list.el);
    await list.load();
  }

  // ---------------------------------------------------------------- exchanges

  async function exchangesPage(main, ctx) {
    main.append(h('h1', null, 'Exchanges'));
    const list = pagedList(ctx, {
      id: 'exchanges',
      path: () => listPath('exchanges'),
      empty: 'No exchanges.',
      columns: () => [
        state.vhost ? null : { title: 'Virtual host', value: (x) => x.vhost },
        { title: 'Name', sort: 'name', value: (x) => link(`#/exchanges/${enc(x.vhost)}/${enc(xPath(x.name))}`, xLabel(x.name)) },
        { title: 'Type', sort: 'type', value: (x) => x.type },
        { title: 'Features', value: (x) => features(x) },
        { title: 'Policy', value: (x) => x.policy || '' },
        { title: 'In', cls: 'n', value: (x) => fmtRate(rateOf(x, 'publish_in')) },
        { title: 'Out', cls: 'n', value: (x) => fmtRate(rateOf(x, 'publish_out')) },
      ].filter((c) => c),
    });
    main.append(list.el);
    await list.load();
    try {
      const types = (await api('GET', '/overview')).exchange_types;
      if (Array.isArray(types) && types.length) state.exchangeTypes = types.map((t) => t.name);
    } catch (e) {
      showError(e);
    }
    if (!ctx.alive()) return;

    const args = argsEditor('x-args', ['alternate-exchange']);
    main.append(section('Add an exchange', form('add-exchange', async (f) => {
      const vhost = input(f, 'vhost').value;
      const name = input(f, 'name').value;
      await api('PUT', `/exchanges/${enc(vhost)}/${enc(name)}`, {
        type: input(f, 'type').value,
        durable: input(f, 'durable').value === 'true',
        auto_delete: input(f, 'auto_delete').checked,
        internal: input(f, 'internal').checked,
        arguments: args.value(),
      });
      flash(`Exchange ${name} declared.`);
      f.reset();
      args.reset();
      await list.load();
    },
    field('Virtual host', vhostSelect()),
    field('Name', h('input', { name: 'name', required: true })),
    field('Type', h('select', { name: 'type' }, state.exchangeTypes.map((t) => h('option', { value: t }, t)))),
    field('Durability', durabilitySelect()),
    field('Auto delete', checkbox('auto_delete')),
    field('Internal', checkbox('internal')),
    field('Arguments', args.el),
    h('button', { type: 'submit' }, 'Add exchange'))));
  }

  function durabilitySelect() {
    return h('select', { name: 'durable' }, h('option', { value: 'true' }, 'Durable'), h('option', { value: 'false' }, 'Transient'));
  }

  function features(o) {
    const f = [];
    if (o.durable) f.push(h('abbr', { title: 'durable', class: 'tag' }, 'D'));
    if (o.auto_delete) f.push(h('abbr', { title: 'auto-delete', class: 'tag' }, 'AD'));
    if (o.internal) f.push(h('abbr', { title: 'internal', class: 'tag' }, 'I'));
    if (o.exclusive) f.push(h('abbr', { title: 'exclusive', class: 'tag' }, 'Excl'));
    for (const k of Object.keys(o.arguments || {})) {
      f.push(h('abbr', { title: `${k}: ${JSON.stringify(o.arguments[k])}`, class: 'tag arg' }, k));
    }
    return f;
  }

  function bindingColumns(vhost, onChange, side) {
    return [
      side === 'source'
        ? { title: 'From', value: (b) => link(`#/exchanges/${enc(vhost)}/${enc(xPath(b.source))}`, xLabel(b.source)) }
        : { title: 'To', value: (b) => link(`#/${b.destination_type === 'queue' ? 'queues' : 'exchanges'}/${enc(vhost)}/${enc(b.destination)}`, b.destination) },
      side === 'source' ? null : { title: 'Type', value: (b) => b.destination_type },
      { title: 'Routing key', value: (b) => b.routing_key },
      { title: 'Arguments', value: (b) => (Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : '') },
      { title: '', value: (b) => (b.source === '' ? h('span', { class: 'note' }, 'default binding')
        : h('button', { type: 'button', class: 'small danger', onclick: (ev) => act(ev.target, async () => {
          const kind = b.destination_type === 'queue' ? 'q' : 'e';
          await api('DELETE', `/bindings/${enc(vhost)}/e/${enc(b.source)}/${kind}/${enc(b.destination)}/${enc(b.properties_key)}`);
          flash('Binding removed.');
          await onChange();
        }) }, 'Unbind')) },
    ].filter((c) => c);
  }

  async function exchangePage(main, ctx, vhost, urlName) {
    const name = urlName === 'amq.default' ? '' : urlName;
    const base = `/exchanges/${enc(vhost)}/${enc(xPath(name))}`;
    main.append(h('h1', null, 'Exchange ', h('span', { class: 'name' }, xLabel(name)), h('span', { class: 'vhost' }, ` in ${vhost}`)));
    const x = await api('GET', base);
    if (!ctx.alive()) return;
    main.append(section('Details', facts([
      ['Type', x.type], ['Features', features(x)], ['Policy', x.policy || ''],
      ['Rates', `in ${fmtRate(rateOf(x, 'publish_in') || 0)} · out ${fmtRate(rateOf(x, 'publish_out') || 0)}`],
      ['Arguments', Object.keys(x.arguments || {}).length ? json(x.arguments) : 'none'],
    ])));
    const rates = objectRatesChart(ctx, 'Message rates', base, [
      { label: 'In', key: 'publish_in' },
      { label: 'Out', key: 'publish_out' },
    ]);
    main.append(rates.el);
    await rates.start();
    if (!ctx.alive()) return;

    const fromHere = h('div');
    const toHere = h('div');
    const loadBindings = async () => {
      const [src, dst] = await Promise.all([api('GET', `${base}/bindings/source`), api('GET', `${base}/bindings/destination`)]);
      if (!ctx.alive()) return;
      put(fromHere, table(bindingColumns(vhost, loadBindings, 'destination'), src, { id: 'bindings-source', empty: 'No bindings from this exchange.' }));
      put(toHere, table(bindingColumns(vhost, loadBindings, 'source'), dst, { id: 'bindings-destination', empty: 'No bindings to this exchange.' }));
    };
    if (name !== '') {
      main.append(section('Bindings from this exchange', fromHere), section('Bindings to this exchange', toHere));
      await loadBindings();
      const bargs = argsEditor('b-args');
      main.append(section('Add a binding from this exchange', form('bind', async (f) => {
        const kind = input(f, 'destination_type').value;
        const dest = input(f, 'destination').value;
        await api('POST', `/bindings/${enc(vhost)}/e/${enc(name)}/${kind}/${enc(dest)}`,
          { routing_key: input(f, 'routing_key').value, arguments: bargs.value() });
        flash(`Bound to ${dest}.`);
        f.reset();
        bargs.reset();
        await loadBindings();
      },
      field('To', h('select', { name: 'destination_type' }, h('option', { value: 'q' }, 'Queue'), h('option', { value: 'e' }, 'Exchange'))),
      field('Name', h('input', { name: 'destination', required: true })),
      field('Routing key', h('input', { name: 'routing_key' })),
      field('Arguments', bargs.el),
      h('button', { type: 'submit' }, 'Bind'))));
    }

    const headers = argsEditor('headers');
    const props = argsEditor('props', ['content_type', 'content_encoding', 'priority', 'correlation_id', 'reply_to',
      'expiration', 'message_id', 'timestamp', 'type', 'user_id', 'app_id']);
    main.append(section('Publish a message', form('publish', async (f) => {
      const properties = props.value();
      properties.delivery_mode = Number(input(f, 'delivery_mode').value);
      const hs = headers.value();
      if (Object.keys(hs).length) properties.headers = hs;
      const r = await api('POST', `${base}/publish`, {
        routing_key: input(f, 'routing_key').value,
        payload: input(f, 'payload').value,
        payload_encoding: input(f, 'payload_encoding').value,
        properties,
      });
      flash(r.routed ? 'Message published.' : 'Message published, but not routed to any queue.', r.routed ? 'info' : 'error');
    },
    field('Routing key', h('input', { name: 'routing_key' })),
    field('Delivery mode', h('select', { name: 'delivery_mode' }, h('option', { value: '1' }, '1 - non-persistent'), h('option', { value: '2' }, '2 - persistent'))),
    field('Headers', headers.el),
    field('Properties', props.el),
    field('Payload', h('textarea', { name: 'payload', rows: 4 })),
    field('Payload encoding', h('select', { name: 'payload_encoding' }, h('option', { value: 'string' }, 'string'), h('option', { value: 'base64' }, 'base64'))),
    h('button', { type: 'submit' }, 'Publish message'))));

    if (name !== '' && !name.startsWith('amq.')) {
      main.append(section('Delete this exchange', h('button', { type: 'button', class: 'danger', id: 'delete-exchange', onclick: (ev) => act(ev.target, () => confirmThen(`Delete exchange ${name}?`, async () => {
        await api('DELETE', base);
        flash(`Exchange ${name} deleted.`);
        go('#/exchanges');
      })) }, 'Delete')));
    }
  }

  // ---------------------------------------------------------------- queues

  const QUEUE_ARGUMENT_HINTS = ['x-message-ttl', 'x-expires', 'x-max-length', 'x-max-length-bytes', 'x-overflow',
    'x-dead-letter-exchange', 'x-dead-letter-routing-key', 'x-max-priority', 'x-queue-mode', 'x-single-active-consumer'];

  async function queuesPage(main, ctx) {
    main.append(h('h1', null, 'Queues'));
    const list = pagedList(ctx, {
      id: 'queues',
      path: () => listPath('queues'),
      empty: 'No queues.',
      columns: () => [
        state.vhost ? null : { title: 'Virtual host', value: (q) => q.vhost },
        { title: 'Name', sort: 'name', value: (q) => link(`#/queues/${enc(q.vhost)}/${enc(q.name)}`, q.name) },
        { title: 'Features', value: (q) => features(q) },
        { title: 'State', value: (q) => q.state },
        { title: 'Ready', cls: 'n', sort: 'messages_ready', value: (q) => fmtNum(q.messages_ready) },
        { title: 'Unacked', cls: 'n', sort: 'messages_unacknowledged', value: (q) => fmtNum(q.messages_unacknowledged) },
        { title: 'Total', cls: 'n', sort: 'messages', value: (q) => fmtNum(q.messages) },
        { title: 'Consumers', cls: 'n', sort: 'consumers', value: (q) => fmtNum(q.consumers) },
        { title: 'Incoming', cls: 'n', sort: 'message_stats.publish_details.rate', value: (q) => fmtRate(rateOf(q, 'publish')) },
        { title: 'Deliver / get', cls: 'n', sort: 'message_stats.deliver_get_details.rate', value: (q) => fmtRate(rateOf(q, 'deliver_get')) },
        { title: 'Ack', cls: 'n', sort: 'message_stats.ack_details.rate', value: (q) => fmtRate(rateOf(q, 'ack')) },
      ].filter((c) => c),
    });
    main.append(list.el);
    await list.load();

    const args = argsEditor('q-args', QUEUE_ARGUMENT_HINTS);
    main.append(section('Add a queue', form('add-queue', async (f) => {
      const vhost = input(f, 'vhost').value;
      const name = input(f, 'name').value;
      await api('PUT', `/queues/${enc(vhost)}/${enc(name)}`, {
        durable: input(f, 'durable').value === 'true',
        auto_delete: input(f, 'auto_delete').checked,
        arguments: args.value(),
      });
      flash(`Queue ${name} declared.`);
      f.reset();
      args.reset();
      await list.load();
    },
    field('Virtual host', vhostSelect()),
    field('Name', h('input', { name: 'name', required: true })),
    field('Durability', durabilitySelect()),
    field('Auto delete', checkbox('auto_delete')),
    field('Arguments', args.el),
    h('button', { type: 'submit' }, 'Add queue'))));
  }

  async function queuePage(main, ctx, vhost, name) {
    const base = `/queues/${enc(vhost)}/${enc(name)}`;
    main.append(h('h1', null, 'Queue ', h('span', { class: 'name' }, name), h('span', { class: 'vhost' }, ` in ${vhost}`)));
    const details = h('div');
    // Depth and rates of this queue since the page opened, from the same polls as the details.
    const history = [];
    const depth = chart('Queued messages', [
      { label: 'Ready', get: (i) => history[i].q.messages_ready },
      { label: 'Unacked', get: (i) => history[i].q.messages_unacknowledged },
      { label: 'Total', get: (i) => history[i].q.messages },
    ], '', () => history);
    const rates = chart('Message rates', [
      { label: 'Publish', get: (i) => rateOf(history[i].q, 'publish') },
      { label: 'Deliver / get', get: (i) => rateOf(history[i].q, 'deliver_get') },
      { label: 'Ack', get: (i) => rateOf(history[i].q, 'ack') },
      { label: 'Redeliver', get: (i) => rateOf(history[i].q, 'redeliver') },
    ], '/s', () => history);
    const loadDetails = async () => {
      let q;
      try {
        q = await api('GET', base);
      } catch (e) {
        if (ctx.alive()) showError(e);
        return;
      }
      if (!ctx.alive()) return;
      history.push({ t: Date.now(), q });
      if (history.length > SAMPLES_MAX) history.shift();
      depth.draw();
      rates.draw();
      put(details, facts([
        ['Features', features(q)],
        ['State', q.state],
        ['Ready', h('span', { id: 'q-ready' }, fmtNum(q.messages_ready))],
        ['Unacked', h('span', { id: 'q-unacked' }, fmtNum(q.messages_unacknowledged))],
        ['Total', h('span', { id: 'q-total' }, fmtNum(q.messages))],
        ['Ready bytes', fmtNum(q.message_bytes_ready)],
        ['Consumers', fmtNum(q.consumers)],
        ['Rates', ['publish', 'deliver_get', 'ack', 'redeliver'].map((k) => `${k} ${fmtRate(rateOf(q, k) || 0)}`).join(' · ')],
        ['Policy', q.policy || ''],
        ['Exclusive owner', q.owner_pid_details ? q.owner_pid_details.name : ''],
        ['Arguments', Object.keys(q.arguments || {}).length ? json(q.arguments) : 'none'],
      ]));
    };
    await loadDetails();
    if (!ctx.alive()) return;
    ctx.every(REFRESH_MS, loadDetails);
    main.append(section('Details', details), h('div', { class: 'charts' }, depth.el, rates.el));

    const consumers = h('div');
    const loadConsumers = async () => {
      const all = await api('GET', `/consumers/${enc(vhost)}`);
      if (!ctx.alive()) return;
      put(consumers, table([
        { title: 'Channel', value: (c) => c.channel_details.name },
        { title: 'Consumer tag', value: (c) => c.consumer_tag },
        { title: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
        { title: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
        { title: 'Prefetch', cls: 'n', value: (c) => fmtNum(c.prefetch_count) },
        { title: 'Arguments', value: (c) => (Object.keys(c.arguments || {}).length ? JSON.stringify(c.arguments) : '') },
      ], all.filter((c) => c.queue.name === name), { id: 'consumers', empty: 'No consumers.' }));
    };
    main.append(section('Consumers', consumers));
    await loadConsumers().catch(showError);

    const bindings = h('div');
    const loadBindings = async () => {
      const list = await api('GET', `${base}/bindings`);
      if (!ctx.alive()) return;
      put(bindings, table(bindingColumns(vhost, loadBindings, 'source'), list, { id: 'bindings', empty: 'No bindings.' }));
    };
    main.append(section('Bindings', bindings));
    await loadBindings().catch(showError);
    const bargs = argsEditor('b-args');
    main.append(section('Add a binding to this queue', form('bind', async (f) => {
      const source = input(f, 'source').value;
      await api('POST', `/bindings/${enc(vhost)}/e/${enc(source)}/q/${enc(name)}`,
        { routing_key: input(f, 'routing_key').value, arguments: bargs.value() });
      flash(`Bound from ${source}.`);
      f.reset();
      bargs.reset();
      await loadBindings();
    },
    field('From exchange', h('input', { name: 'source', required: true })),
    field('Routing key', h('input', { name: 'routing_key' })),
    field('Arguments', bargs.el),
    h('button', { type: 'submit' }, 'Bind'))));

    const got = h('div', { id: 'got-messages' });
    main.append(section('Get messages', form('get-messages', async (f) => {
      const msgs = await api('POST', `${base}/get`, {
        count: Number(input(f, 'count').value),
        ackmode: input(f, 'ackmode').value,
        encoding: input(f, 'encoding').value,
        truncate: 50000,
      });
      put(got, msgs.length === 0 ? h('p', { class: 'note' }, 'Queue is empty.')
        : msgs.map((m, i) => h('div', { class: 'message' }, h('h3', null, `Message ${i + 1}`), facts([
          ['Exchange', xLabel(m.exchange)],
          ['Routing key', m.routing_key],
          ['Redelivered', m.redelivered ? 'yes' : 'no'],
          ['Messages left', fmtNum(m.message_count)],
          ['Properties', json(m.properties || {})],
          ['Payload', h('span', null, `${fmtNum(m.payload_bytes)} bytes, encoding ${m.payload_encoding}`)],
          ['', h('pre', { class: 'payload' }, m.payload)],
        ]))));
      await loadDetails();
    },
    field('Ack mode', h('select', { name: 'ackmode' },
      h('option', { value: 'ack_requeue_true' }, 'Nack message requeue true'),
      h('option', { value: 'ack_requeue_false' }, 'Automatic ack'),
      h('option', { value: 'reject_requeue_true' }, 'Reject requeue true'),
      h('option', { value: 'reject_requeue_false' }, 'Reject requeue false'))),
    field('Encoding', h('select', { name: 'encoding' }, h('option', { value: 'auto' }, 'Auto string / base64'), h('option', { value: 'base64' }, 'base64'))),
    field('Messages', h('input', { name: 'count', type: 'number', min: 1, max: 100, value: '1' })),
    h('button', { type: 'submit' }, 'Get messages')), got));

    main.append(section('Purge and delete',
      h('button', { type: 'button', id: 'purge', onclick: (ev) => act(ev.target, () => confirmThen(`Purge queue ${name}?`, async () => {
        await api('DELETE', `${base}/contents`);
        flash(`Queue ${name} purged.`);
        await loadDetails();
      })) }, 'Purge messages'),
      ' ',
      h('button', { type: 'button', class: 'danger', id: 'delete-queue', onclick: (ev) => act(ev.target, () => confirmThen(`Delete queue ${name}?`, async () => {
        await api('DELETE', base);
        flash(`Queue ${name} deleted.`);
        go('#/queues');
      })) }, 'Delete queue')));
  }

  // ---------------------------------------------------------------- admin

  async function adminPage(main, ctx) {
    main.append(h('h1', null, 'Admin'));
    // Administrators see everything here; policymakers only the policies of their vhosts.
    const admin = isAdmin();
    if (!admin && !isTagged('policymaker')) {
      main.append(h('p', { class: 'note' }, 'The Admin pages need the administrator or policymaker tag.'));
      return;
    }
    const users = h('div');
    const vhosts = h('div');
    const perms = h('div');
    const topicPerms = h('div');
    const del = (what, path, reload) => (ev) => act(ev.target, () => confirmThen(`Delete ${what}?`, async () => {
      await api('DELETE', path);
      flash(`Deleted ${what}.`);
      await reload();
    }));

    const loadUsers = async () => {
      const list = await api('GET', '/users');
      if (!ctx.alive()) return;
      put(users, table([
        { title: 'Name', value: (u) => u.name },
        { title: 'Tags', value: (u) => (Array.isArray(u.tags) ? u.tags : [u.tags]).filter((t) => t).map((t) => h('span', { class: 'tag' }, t)) },
        { title: 'Has password', value: (u) => (u.password_hash ? 'yes' : 'no') },
        { title: '', value: (u) => h('button', { type: 'button', class: 'small danger', onclick: del(`user ${u.name}`, `/users/${enc(u.name)}`, loadAll) }, 'Delete') },
      ], list, { id: 'users' }));
    };
    const loadVhostList = async () => {
      const list = await api('GET', '/vhosts');
      if (!ctx.alive()) return;
      await loadVhosts();
      put(vhosts, table([
        { title: 'Name', value: (v) => v.name },
        { title: 'Ready', cls: 'n', value: (v) => fmtNum(v.messages_ready) },
        { title: 'Unacked', cls: 'n', value: (v) => fmtNum(v.messages_unacknowledged) },
        { title: 'Total', cls: 'n', value: (v) => fmtNum(v.messages) },
        { title: '', value: (v) => h('button', { type: 'button', class: 'small danger', onclick: del(`virtual host ${v.name}`, `/vhosts/${enc(v.name)}`, loadAll) }, 'Delete') },
      ], list, { id: 'vhosts' }));
    };
    const loadPerms = async () => {
      const list = await api('GET', '/permissions');
      if (!ctx.alive()) return;
      put(perms, table([
        { title: 'User', value: (p) => p.user },
        { title: 'Virtual host', value: (p) => p.vhost },
        { title: 'Configure', value: (p) => h('code', null, p.configure) },
        { title: 'Write', value: (p) => h('code', null, p.write) },
        { title: 'Read', value: (p) => h('code', null, p.read) },
        { title: '', value: (p) => h('button', { type: 'button', class: 'small danger', onclick: del(`permissions of ${p.user} in ${p.vhost}`, `/permissions/${enc(p.vhost)}/${enc(p.user)}`, loadPerms) }, 'Clear') },
      ], list, { id: 'permissions' }));
    };
    const loadTopicPerms = async () => {
      const list = await api('GET', '/topic-permissions');
      if (!ctx.alive()) return;
      put(topicPerms, table([
        { title: 'User', value: (p) => p.user },
        { title: 'Virtual host', value: (p) => p.vhost },
        { title: 'Exchange', value: (p) => p.exchange },
        { title: 'Write', value: (p) => h('code', null, p.write) },
        { title: 'Read', value: (p) => h('code', null, p.read) },
        { title: '', value: (p) => h('button', { type: 'button', class: 'small danger', onclick: del(`topic permissions of ${p.user} on ${p.exchange} in ${p.vhost}`, `/topic-permissions/${enc(p.vhost)}/${enc(p.user)}?exchange=${enc(p.exchange)}`, loadTopicPerms) }, 'Clear') },
      ], list, { id: 'topic-permissions', empty: 'No topic permissions: users are not limited on topic exchanges.' }));
    };
    const loadAll = async () => {
      await Promise.all([admin && loadUsers(), admin && loadVhostList(), admin && loadPerms(), admin && loadTopicPerms(),
        policies.load(), admin && operatorPolicies.load()]);
      refreshChoices();
    };

    const userChoice = h('select', { name: 'user' });
    const vhostChoice = h('select', { name: 'vhost' });
    const topicUserChoice = h('select', { name: 'user' });
    const topicVhostChoice = h('select', { name: 'vhost' });
    function refreshChoices() {
      if (admin) {
        api('GET', '/users?columns=name').then((list) => {
          for (const sel of [userChoice, topicUserChoice]) {
            const was = sel.value;
            put(sel, ...list.map((u) => h('option', { value: u.name, selected: u.name === was }, u.name)));
          }
        }).catch(showError);
      }
      for (const sel of [vhostChoice, topicVhostChoice, policies.vhost, operatorPolicies.vhost]) {
        const was = sel.value;
        put(sel, ...vhostNames.map((v) => h('option', { value: v, selected: v === was }, v)));
      }
    }

    if (admin) main.append(section('Users', users, h('h3', null, 'Add a user'), form('add-user', async (f) => {
      const name = input(f, 'name').value;
      await api('PUT', `/users/${enc(name)}`, { password: input(f, 'password').value, tags: input(f, 'tags').value });
      flash(`User ${name} added.`);
      f.reset();
      await loadUsers();
      refreshChoices();
    },
    field('Username', h('input', { name: 'name', required: true, autocomplete: 'off' })),
    field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'new-password' })),
    field('Tags', h('input', { name: 'tags', placeholder: 'administrator, monitoring, policymaker, management', list: 'tag-hints' })),
    h('datalist', { id: 'tag-hints' }, ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'].map((t) => h('option', { value: t }))),
    h('button', { type: 'submit' }, 'Add user'))));

    if (admin) main.append(section('Virtual hosts', vhosts, h('h3', null, 'Add a virtual host'), form('add-vhost', async (f) => {
      const name = input(f, 'name').value;
      await api('PUT', `/vhosts/${enc(name)}`, {});
      flash(`Virtual host ${name} added.`);
      f.reset();
      await loadVhostList();
      refreshChoices();
    },
    field('Name', h('input', { name: 'name', required: true })),
    h('button', { type: 'submit' }, 'Add virtual host'))));

    if (admin) main.append(section('Permissions', perms, h('h3', null, 'Set permissions'), form('set-permissions', async (f) => {
      const user = input(f, 'user').value;
      const vhost = input(f, 'vhost').value;
      await api('PUT', `/permissions/${enc(vhost)}/${enc(user)}`,
        { configure: input(f, 'configure').value, write: input(f, 'write').value, read: input(f, 'read').value });
      flash(`Permissions of ${user} in ${vhost} set.`);
      await loadPerms();
    },
    field('User', userChoice), field('Virtual host', vhostChoice),
    field('Configure', h('input', { name: 'configure', value: '.*' })),
    field('Write', h('input', { name: 'write', value: '.*' })),
    field('Read', h('input', { name: 'read', value: '.*' })),
    h('button', { type: 'submit' }, 'Set permissions'))));

    if (admin) main.append(section('Topic permissions', topicPerms, h('h3', null, 'Set topic permissions'), form('set-topic-permissions', async (f) => {
      const user = input(f, 'user').value;
      const vhost = input(f, 'vhost').value;
      const exchange = input(f, 'exchange').value;
      await api('PUT', `/topic-permissions/${enc(vhost)}/${enc(user)}`,
        { exchange, write: input(f, 'write').value, read: input(f, 'read').value });
      flash(`Topic permissions of ${user} on ${exchange} in ${vhost} set.`);
      await loadTopicPerms();
    },
    field('User', topicUserChoice), field('Virtual host', topicVhostChoice),
    field('Exchange', h('input', { name: 'exchange', value: 'amq.topic', required: true })),
    field('Write regex', h('input', { name: 'write', value: '.*' })),
    field('Read regex', h('input', { name: 'read', value: '.*' })),
    h('button', { type: 'submit' }, 'Set topic permissions'))));

    // Policies (policymakers and administrators) and operator policies (administrators), alike
    // but for their path and the keys a definition usually has.
    const policySection = (path, title, noun, id, hints) => {
      const holder = h('div');
      const vhost = h('select', { name: 'vhost' });
      const load = async () => {
        const list = await api('GET', `/${path}`);
        if (!ctx.alive()) return;
        put(holder, table([
          { title: 'Virtual host', value: (p) => p.vhost },
          { title: 'Name', value: (p) => p.name },
          { title: 'Pattern', value: (p) => h('code', null, p.pattern) },
          { title: 'Apply to', value: (p) => p['apply-to'] },
          { title: 'Definition', value: (p) => JSON.stringify(p.definition) },
          { title: 'Priority', cls: 'n', value: (p) => String(p.priority) },
          { title: '', value: (p) => h('button', { type: 'button', class: 'small danger', onclick: del(`${noun} ${p.name}`, `/${path}/${enc(p.vhost)}/${enc(p.name)}`, load) }, 'Delete') },
        ], list, { id: path }));
      };
      const definition = argsEditor(`${id}-def`, hints);
      const el = section(title, holder, h('h3', null, `Add ${noun === 'policy' ? 'a' : 'an'} ${noun}`), form(`add-${id}`, async (f) => {
        const v = input(f, 'vhost').value;
        const name = input(f, 'name').value;
        await api('PUT', `/${path}/${enc(v)}/${enc(name)}`, {
          pattern: input(f, 'pattern').value,
          'apply-to': input(f, 'apply-to').value,
          priority: Number(input(f, 'priority').value || 0),
          definition: definition.value(),
        });
        flash(`${noun[0].toUpperCase()}${noun.slice(1)} ${name} set.`);
        f.reset();
        definition.reset();
        await load();
      },
      field('Virtual host', vhost),
      field('Name', h('input', { name: 'name', required: true })),
      field('Pattern', h('input', { name: 'pattern', required: true, placeholder: '^amq\\.' })),
      field('Apply to', h('select', { name: 'apply-to' }, ['all', 'queues', 'exchanges'].map((t) => h('option', { value: t }, t)))),
      field('Priority', h('input', { name: 'priority', type: 'number', value: '0' })),
      field('Definition', definition.el),
      h('button', { type: 'submit' }, `Add ${noun}`)));
      return { el, load, vhost };
    };
    const policies = policySection('policies', 'Policies', 'policy', 'policy', ['message-ttl', 'expires', 'max-length',
      'max-length-bytes', 'overflow', 'dead-letter-exchange', 'dead-letter-routing-key', 'alternate-exchange', 'max-priority']);
    const operatorPolicies = policySection('operator-policies', 'Operator policies', 'operator policy', 'operator-policy',
      ['message-ttl', 'expires', 'max-length', 'max-length-bytes', 'delivery-limit']);
    main.append(policies.el);
    if (admin) main.append(operatorPolicies.el);

    const exportLink = h('a', { id: 'export-link', hidden: true }, 'Download');
    if (admin) main.append(section('Definitions',
      h('p', null, 'Export: users, vhosts, permissions, policies, exchanges, queues and bindings as JSON, in RabbitMQ\'s format.'),
      h('button', { type: 'button', id: 'export', onclick: (ev) => act(ev.target, async () => {
        const text = await api('GET', '/definitions', undefined, { raw: true });
        const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
        exportLink.href = url;
        exportLink.download = `warren-definitions-${new Date().toISOString().slice(0, 10)}.json`;
        exportLink.click();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      }) }, 'Download definitions'), exportLink,
      h('h3', null, 'Import'),
      form('import', async (f) => {
        const file = input(f, 'file').files[0];
        if (!file) throw new Error('choose a definitions file first');
        const text = await file.text();
        try {
          JSON.parse(text);
        } catch (e) {
          throw new Error(`${file.name} is not JSON: ${e.message}`);
        }
        await api('POST', '/definitions', text);
        flash(`Definitions imported from ${file.name}.`);
        f.reset();
        await loadAll();
      }, field('File', h('input', { type: 'file', name: 'file', accept: '.json,application/json' })),
      h('button', { type: 'submit' }, 'Upload definitions'))));

    await loadAll();
  }

  // ---------------------------------------------------------------- start

  document.addEventListener('DOMContentLoaded', () => {
    $('#login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      act(ev.target.querySelector('button'), () => login($('#login-user').value, $('#login-pass').value));
    });
    $('#logout').addEventListener('click', () => { logout(); location.hash = '#/'; });
    $('#vhost-filter').addEventListener('change', (ev) => { setVhost(ev.target.value); render(); });
    window.addEventListener('hashchange', render);
    if (state.auth) {
      start().catch((e) => { logout(); showError(e); });
    } else {
      $('#login').hidden = false;
    }
  });
})();
