// The approval app: sign in with a passkey, list pending withdrawals,
// show one decoded from its approval statement, and approve, reject or
// cancel with a passkey assertion over that statement. It talks to the
// coordinator's REST API on this origin with the session cookie; every
// state-changing request carries the session's CSRF token.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const S = CustosStatement;
  let session = null;
  let events = null;
  let current = null; // the withdrawal shown on the detail page
  let refreshing = false;

  // ------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') {
        e.className = v;
      } else if (k.startsWith('data-')) {
        e.setAttribute(k, v);
      } else {
        e[k] = v;
      }
    }
    for (const c of children) {
      e.append(c instanceof Node ? c : document.createTextNode(c === undefined || c === null ? '' : String(c)));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function say(text, kind) {
    const m = $('message');
    m.textContent = text || '';
    m.className = kind || '';
  }

  // The assertion a browser returned, as the API takes it (hex fields).
  function assertionJson(cred) {
    const h = (buf) => S.toHex(new Uint8Array(buf));
    return {
      credential_id: h(cred.rawId),
      authenticator_data: h(cred.response.authenticatorData),
      client_data_json: h(cred.response.clientDataJSON),
      signature: h(cred.response.signature),
    };
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    if (method !== 'GET' && session) {
      headers['X-CSRF-Token'] = session.csrf_token;
    }
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    if (r.status === 401 && session && path !== '/app/session') {
      signedOut('Your session ended: sign in again.');
    }
    if (!r.ok) {
      const why = data && data.error ? data.error : `HTTP ${r.status}`;
      const e = new Error(why);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  function when(rfc3339) {
    if (!rfc3339) {
      return '';
    }
    const d = new Date(rfc3339);
    return isNaN(d) ? rfc3339 : d.toLocaleString();
  }

  // "1m 05s" until `rfc3339`, or '' when it passed or is unset.
  function countdown(rfc3339) {
    if (!rfc3339) {
      return '';
    }
    const left = Math.ceil((new Date(rfc3339).getTime() - Date.now()) / 1000);
    if (!(left > 0)) {
      return 'elapsed';
    }
    const m = Math.floor(left / 60);
    const s = String(left % 60).padStart(2, '0');
    return m > 0 ? `${m}m ${s}s left` : `${left}s left`;
  }

  function destination(w) {
    return w.destination_label
      ? el('span', { class: 'known' }, w.destination_label)
      : el('span', { class: 'new' }, 'NEW: not in the address book');
  }

  function stateCell(state) {
    return el('span', { class: `state state-${state}`, 'data-state': state }, state.replace(/_/g, ' '));
  }

  function approvalsCount(w) {
    const n = w.approvals.filter((a) => a.verdict === 'approve').length;
    return `${n} approved; needs ${w.required_approvals || '?'}`;
  }

  // ------------------------------------------------------------ session

  async function passkey(challenge, allow) {
    const options = {
      challenge,
      rpId: session ? session.rp_id : undefined,
      userVerification: 'required',
      timeout: 120000,
    };
    if (allow && allow.length) {
      options.allowCredentials = allow.map((id) => ({ type: 'public-key', id: S.fromHex(id) }));
    }
    const cred = await navigator.credentials.get({ publicKey: options });
    if (!cred) {
      throw new Error('no passkey answered');
    }
    return assertionJson(cred);
  }

  async function signIn() {
    say('Waiting for your passkey…');
    try {
      const c = await api('POST', '/app/session/challenge');
      const cred = await navigator.credentials.get({
        publicKey: {
          challenge: S.fromHex(c.challenge),
          rpId: c.rp_id,
          userVerification: 'required',
          timeout: c.timeout_ms,
        },
      });
      session = await api('POST', '/app/session', assertionJson(cred));
      say(`Signed in as ${session.approver}.`, 'ok');
      signedIn();
    } catch (e) {
      say(`Sign-in failed: ${e.message}`, 'error');
    }
  }

  async function signOut() {
    try {
      await api('POST', '/app/session/logout');
    } catch (_) {
      // Over or gone already: the page signs out either way.
    }
    signedOut('Signed out.');
  }

  function signedIn() {
    $('nav').hidden = false;
    $('who').textContent = `${session.approver} (until ${new Date(session.expires_at).toLocaleTimeString()})`;
    $('who').setAttribute('data-approver', session.approver);
    listen();
    if (!location.hash || location.hash === '#/signin') {
      location.hash = '#/pending';
    } else {
      route();
    }
  }

  function signedOut(text) {
    session = null;
    if (events) {
      events.close();
      events = null;
    }
    $('nav').hidden = true;
    show('signin-view');
    say(text || '');
  }

  // Live updates: the server says "change", the page refetches.
  function listen() {
    if (events) {
      events.close();
    }
    events = new EventSource('/app/events');
    events.addEventListener('hello', () => {
      $('live').className = 'badge';
      $('live').textContent = 'live';
    });
    events.addEventListener('change', () => refresh());
    events.onerror = () => {
      $('live').className = 'badge off';
      $('live').textContent = 'reconnecting';
    };
  }

  // ------------------------------------------------------------ views

  function show(id) {
    for (const v of ['signin-view', 'enroll-view', 'pending-view', 'detail-view', 'history-view', 'reports-view']) {
      $(v).hidden = v !== id;
    }
    for (const [nav, view] of [['nav-pending', 'pending-view'], ['nav-history', 'history-view'], ['nav-reports', 'reports-view']]) {
      $(nav).className = view === id ? 'current' : '';
    }
  }

  async function pending() {
    show('pending-view');
    const page = await api('GET', '/v1/withdrawals/pending');
    const body = $('pending').tBodies[0];
    clear(body);
    for (const w of page.withdrawals) {
      const row = el(
        'tr',
        { 'data-id': w.id },
        el('td', {}, el('a', { href: `#/w/${encodeURIComponent(w.id)}` }, w.id)),
        el('td', {}, w.wallet),
        el('td', {}, w.amount_human),
        el('td', {}, destination(w)),
        el('td', {}, w.rule_id),
        el('td', {}, approvalsCount(w)),
        el('td', {}, stateCell(w.state)),
        el('td', { class: 'countdown', 'data-until': w.time_lock_until || '' }, countdown(w.time_lock_until)),
      );
      row.addEventListener('click', () => {
        location.hash = `#/w/${encodeURIComponent(w.id)}`;
      });
      body.append(row);
    }
    $('pending-empty').hidden = page.withdrawals.length > 0;
  }

  async function history() {
    show('history-view');
    const page = await api('GET', '/v1/withdrawals?page_size=100');
    const body = $('history').tBodies[0];
    clear(body);
    for (const w of page.withdrawals) {
      body.append(
        el(
          'tr',
          { 'data-id': w.id },
          el('td', {}, el('a', { href: `#/w/${encodeURIComponent(w.id)}` }, w.id)),
          el('td', {}, when(w.created_at)),
          el('td', {}, w.wallet),
          el('td', {}, w.amount_human),
          el('td', {}, w.destination_label || w.destination),
          el('td', {}, w.rule_id),
          el('td', {}, stateCell(w.state)),
          el('td', {}, w.reason),
        ),
      );
    }
  }

  // YYYY-MM-DD of a Date, in UTC.
  const isoDay = (d) => d.toISOString().slice(0, 10);

  async function reports() {
    show('reports-view');
    if (!$('reports-from').value || !$('reports-to').value) {
      const today = new Date();
      $('reports-to').value = isoDay(today);
      $('reports-from').value = isoDay(new Date(today.getTime() - 29 * 86400000));
    }
    const [from, to] = [$('reports-from').value, $('reports-to').value];
    if (from > to) {
      say('Reports: the range starts after it ends.', 'error');
      return;
    }
    const root = $('reports');
    root.setAttribute('data-ready', 'false');
    await CustosReports.render(root, from, to, api, el);
    root.setAttribute('data-ready', 'true');
  }

  function dl(node, rows) {
    clear(node);
    for (const [field, label, value] of rows) {
      node.append(el('dt', {}, label), el('dd', { 'data-field': field }, value));
    }
  }

  // Fields where the server's description must equal the statement.
  function mismatches(w, st) {
    const out = [];
    const check = (name, a, b) => {
      if (String(a) !== String(b)) {
        out.push(`${name}: statement says ${b}, server says ${a}`);
      }
    };
    check('withdrawal', w.id, st.withdrawal_id);
    check('wallet', w.wallet, st.source_wallet);
    check('asset', w.asset, st.asset);
    check('amount', w.amount, st.amount);
    check('rule', w.rule_id, st.rule_id);
    if (w.destination.toLowerCase() !== st.destination.toLowerCase()) {
      out.push(`destination: statement says ${st.destination}, server says ${w.destination}`);
    }
    return out;
  }

  async function detail(id) {
    show('detail-view');
    const w = await api('GET', `/v1/withdrawals/${encodeURIComponent(id)}`);
    current = w;
    $('detail-id').textContent = w.id;
    let st = null;
    let problems = [];
    try {
      st = S.decode(w.statement);
      problems = mismatches(w, st);
    } catch (e) {
      problems = [`the approval statement does not decode: ${e.message}`];
    }
    $('mismatch').hidden = problems.length === 0;
    $('mismatch').textContent = problems.length
      ? `Do not approve: ${problems.join('; ')}`
      : '';
    if (st) {
      dl($('statement'), [
        ['withdrawal_id', 'Withdrawal', st.withdrawal_id],
        ['wallet', 'From wallet', st.source_wallet + (st.source_address ? ` (${st.source_path}: ${st.source_address})` : '')],
        ['chain', 'Chain', st.chain],
        ['asset', 'Asset', st.asset],
        ['amount_units', 'Amount', w.amount_human],
        ['amount_base', 'Amount (base units)', st.amount],
        ['destination', 'Destination', st.destination],
        ['label', 'Address book', destination(w)],
        ['fee_cap', 'Fee cap (base units)', st.fee_cap],
        ['rule', 'Policy rule', st.rule_id],
        ['policy_hash', 'Policy', st.policy_hash],
        ['tx_digest', 'Transaction digest', st.tx_digest],
        ['expiry', 'Approvals valid until', new Date(st.expiry * 1000).toLocaleString()],
      ]);
    } else {
      clear($('statement'));
    }
    const lockRows = w.time_lock_until
      ? [['time_lock', 'Time lock', el('span', { class: 'countdown', 'data-until': w.time_lock_until }, countdown(w.time_lock_until))]]
      : [];
    dl($('status-list'), [
      ['state', 'State', stateCell(w.state)],
      ['required', 'Quorum', approvalsCount(w)],
      ['initiator', 'Requested by', w.initiator],
      ['created', 'Requested', when(w.created_at)],
      ['delay', 'Delay after approval', w.delay_secs ? `${w.delay_secs}s` : 'none'],
      ...lockRows,
      ['cancel_group', 'Cancel group', w.cancel_group || 'none'],
      ['reason', 'Reason', w.reason || ''],
      ['tx_hash', 'Transaction', w.tx_hash || ''],
    ]);
    $('risk').textContent = `Risk score ${w.risk_score} / 100`;
    $('risk').setAttribute('data-score', String(w.risk_score));
    const reasons = $('risk-reasons');
    clear(reasons);
    for (const r of w.risk_reasons) {
      reasons.append(el('li', {}, `${r.code} (+${r.points}): ${r.message}`));
    }
    const approvals = $('approvals');
    clear(approvals);
    for (const a of w.approvals) {
      approvals.append(el('li', { 'data-approver': a.approver }, `${a.approver}: ${a.verdict} at ${when(a.received_at)}`));
    }
    if (!w.approvals.length) {
      approvals.append(el('li', {}, 'none yet'));
    }
    const mine = session && w.approvals.some((a) => a.approver === session.approver);
    const ok = st && problems.length === 0;
    $('approve-box').hidden = !(ok && w.state === 'awaiting_approvals' && !mine);
    $('reject-box').hidden = !(ok && w.state === 'awaiting_approvals' && !mine);
    $('cancel-box').hidden = !(ok && w.state === 'time_locked');
  }

  async function verdict(kind) {
    const w = current;
    if (!w || !session) {
      return;
    }
    const reasonBox = kind === 'reject' ? $('reject-reason') : kind === 'cancel' ? $('cancel-reason') : null;
    const reason = reasonBox ? reasonBox.value.trim() : '';
    if (kind === 'reject' && !reason) {
      say('Give a reason for rejecting.', 'error');
      reasonBox.focus();
      return;
    }
    const buttons = ['approve', 'reject', 'cancel'].map($);
    buttons.forEach((b) => {
      b.disabled = true;
    });
    say('Confirm with your passkey…');
    try {
      const st = S.decode(w.statement);
      const challenge = await S.challenge(st.bytes, kind);
      const webauthn = await passkey(challenge, session.credentials);
      const updated = await api('POST', `/v1/withdrawals/${encodeURIComponent(w.id)}/approvals`, {
        approver: session.approver,
        verdict: kind,
        reason,
        webauthn,
      });
      say(`${kind === 'approve' ? 'Approved' : kind === 'reject' ? 'Rejected' : 'Cancelled'}: ${updated.id} is ${updated.state.replace(/_/g, ' ')}.`, 'ok');
      if (reasonBox) {
        reasonBox.value = '';
      }
      await detail(w.id);
    } catch (e) {
      say(`Refused: ${e.message}`, 'error');
    } finally {
      buttons.forEach((b) => {
        b.disabled = false;
      });
    }
  }

  // ------------------------------------------------------------ enrollment

  function b64url(bytes) {
    let s = '';
    for (const b of bytes) {
      s += String.fromCharCode(b);
    }
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // Creates a passkey for the approver id typed in, and shows it in the
  // policy document's form: the credential id (base64url) and the public
  // key, hex (the SEC1 point of a P-256 key, the 32 bytes of an Ed25519
  // key, taken from the SubjectPublicKeyInfo the browser gives).
  async function enroll() {
    const id = $('enroll-id').value.trim();
    const role = $('enroll-role').value.trim();
    for (const [what, v] of [['Approver id', id], ['Role', role]]) {
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(v)) {
        say(`${what}: 1 to 64 letters, digits, ".", "_" or "-".`, 'error');
        return;
      }
    }
    say('Creating the passkey…');
    try {
      const c = await api('POST', '/app/session/challenge');
      const cred = await navigator.credentials.create({
        publicKey: {
          challenge: S.fromHex(c.challenge),
          rp: { id: c.rp_id, name: 'Custos approvals' },
          user: { id: new TextEncoder().encode(id), name: id, displayName: id },
          pubKeyCredParams: [
            { type: 'public-key', alg: -7 },
            { type: 'public-key', alg: -8 },
          ],
          authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
          attestation: 'none',
          timeout: c.timeout_ms,
        },
      });
      const alg = cred.response.getPublicKeyAlgorithm();
      const spki = new Uint8Array(cred.response.getPublicKey());
      let line;
      if (alg === -7 && spki.length >= 65 && spki[spki.length - 65] === 4) {
        line = `webauthn_p256 = { credential_id = "${b64url(new Uint8Array(cred.rawId))}", public_key = "${S.toHex(spki.subarray(spki.length - 65))}" }`;
      } else if (alg === -8 && spki.length >= 32) {
        line = `webauthn_ed25519 = { credential_id = "${b64url(new Uint8Array(cred.rawId))}", public_key = "${S.toHex(spki.subarray(spki.length - 32))}" }`;
      } else {
        throw new Error(`the authenticator made a key of COSE algorithm ${alg}; only ES256 (-7) and EdDSA (-8) can approve`);
      }
      const out = $('enroll-result');
      out.textContent = `[[approvers]]\nid = "${id}"\nrole = "${role}"\n${line}`;
      out.hidden = false;
      say('Passkey created: give these lines to your security admins.', 'ok');
    } catch (e) {
      say(`Enrollment failed: ${e.message}`, 'error');
    }
  }

  async function route() {
    if (location.hash === '#/enroll') {
      show('enroll-view');
      return;
    }
    if (!session) {
      show('signin-view');
      return;
    }
    const hash = location.hash || '#/pending';
    try {
      if (hash.startsWith('#/w/')) {
        await detail(decodeURIComponent(hash.slice(4)));
      } else if (hash === '#/history') {
        await history();
      } else if (hash === '#/reports') {
        // Charts are redrawn on demand, not on every live change.
        if (!refreshing || $('reports-view').hidden) {
          await reports();
        }
      } else {
        await pending();
      }
    } catch (e) {
      say(e.message, 'error');
    }
  }

  // Refetches what is shown (after a change event; at most one at a time).
  async function refresh() {
    if (refreshing || !session) {
      return;
    }
    refreshing = true;
    try {
      await route();
    } finally {
      refreshing = false;
    }
  }

  function tick() {
    for (const c of document.querySelectorAll('.countdown')) {
      c.textContent = countdown(c.getAttribute('data-until'));
    }
  }

  async function start() {
    $('signin').addEventListener('click', signIn);
    $('signout').addEventListener('click', signOut);
    $('enroll').addEventListener('click', enroll);
    $('approve').addEventListener('click', () => verdict('approve'));
    $('reject').addEventListener('click', () => verdict('reject'));
    $('cancel').addEventListener('click', () => verdict('cancel'));
    $('reports-form').addEventListener('submit', (e) => {
      e.preventDefault();
      reports().catch((err) => say(err.message, 'error'));
    });
    window.addEventListener('hashchange', route);
    setInterval(tick, 1000);
    // A fallback for a stream that dropped a change.
    setInterval(refresh, 15000);
    try {
      session = await api('GET', '/app/session');
      signedIn();
    } catch (_) {
      signedOut('');
      route();
    }
  }

  start();
})();
