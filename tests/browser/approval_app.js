// Drives the approval app in headless Chromium for
// tests/tests/withdrawals/approval_app.rs, which starts the cluster, creates
// the withdrawals, runs this script and checks what it prints: one JSON
// object per line, {"step": ..., ...}.
//
// The browser reaches the app as https://custos.test (the policy's
// [webauthn] origin and RP ID) through a CONNECT proxy to the coordinator's
// HTTPS port; the coordinator's certificate is pinned by its SPKI hash (it
// names localhost, not custos.test). Debian's chromium, never a downloaded
// browser. Each approver has its own browser context with a CDP virtual
// authenticator holding its passkey (the flow policy's TEST KEYS: P-256
// scalars 0xf1.. and 0xf2.., credential ids 0xf1 x16 and 0xf2 x16).
//
// Env: APP_TARGET (host:port of the coordinator's HTTPS API), APP_CERT (its
// certificate, PEM), APP_W_APPROVE, APP_W_REJECT, APP_W_CANCEL, APP_W_EXPIRED,
// APP_W_TAMPER (withdrawal ids; APP_W_EXPIRED's approvals have expired,
// APP_W_TAMPER only gets tampered approvals), APP_SCREENSHOTS (directory for
// the README's screenshots). With APP_MODE=enrolled (a second cluster
// whose policy holds the approvers enrolled in the first run):
// APP_CREDENTIALS (their exported passkeys) and APP_W_APPROVE only.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const path = require('path');
const { chromium } = require('playwright-core');

const ORIGIN = 'https://custos.test';
const env = (k) => {
  const v = process.env[k];
  if (!v) {
    throw new Error(`${k} is not set`);
  }
  return v;
};
const TARGET = env('APP_TARGET');
const [HOST, PORT] = [TARGET.split(':')[0], Number(TARGET.split(':')[1])];
const SHOTS = env('APP_SCREENSHOTS');
const ENROLLED = process.env.APP_MODE === 'enrolled';
const W = ENROLLED
  ? { approve: env('APP_W_APPROVE') }
  : { approve: env('APP_W_APPROVE'), reject: env('APP_W_REJECT'), cancel: env('APP_W_CANCEL'), expired: env('APP_W_EXPIRED'), tamper: env('APP_W_TAMPER') };
const out = (step, fields) => console.log(JSON.stringify({ step, ...fields }));
let lastPage = null;
const b64u = (b) => Buffer.from(b).toString('base64url');

// The passkey of approver `who` as WebAuthn.addCredential takes it.
function credential(who, signCount) {
  const seed = { frank: 0xf1, grace: 0xf2, mallory: 0xee }[who];
  const d = Buffer.alloc(32, seed);
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey();
  const key = crypto.createPrivateKey({
    key: { kty: 'EC', crv: 'P-256', d: b64u(d), x: b64u(pub.subarray(1, 33)), y: b64u(pub.subarray(33)) },
    format: 'jwk',
  });
  return {
    credentialId: Buffer.alloc(16, seed).toString('base64'),
    isResidentCredential: true,
    userName: who,
    userDisplayName: who,
    rpId: 'custos.test',
    privateKey: key.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    userHandle: Buffer.from(who).toString('base64'),
    // Above any counter the gRPC passkey test used for these credentials.
    signCount: signCount === undefined ? 5000 : signCount,
  };
}

// Every tunnel the browser asks for goes to the coordinator.
async function proxy() {
  const p = http.createServer((_, res) => {
    res.statusCode = 405;
    res.end();
  });
  p.on('connect', (_req, sock, head) => {
    const up = net.connect(PORT, HOST, () => {
      sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  await new Promise((r) => p.listen(0, '127.0.0.1', r));
  return p;
}

// A request straight to the coordinator (not through the browser), with
// headers a browser would not let a page set.
function raw(method, urlPath, headers, body) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: HOST, port: PORT, method, path: urlPath, headers, rejectUnauthorized: false },
      (res) => {
        let text = '';
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode, body: text }));
      },
    );
    req.on('error', reject);
    if (body) {
      req.write(body);
    }
    req.end();
  });
}

async function approverContext(browser, who, cred) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => out('page_error', { approver: who, message: String(e) }));
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: cred || credential(who) });
  return { ctx, page, cdp, authenticatorId, who };
}

async function signIn(a) {
  const sent = [];
  const capture = (r) => {
    if (r.method() === 'POST' && r.url() === `${ORIGIN}/app/session`) {
      sent.push(r.postData());
    }
  };
  a.page.on('request', capture);
  await a.page.goto(`${ORIGIN}/app/`);
  await a.page.waitForSelector('#signin', { state: 'visible' });
  await a.page.click('#signin');
  await a.page.waitForSelector(`#who[data-approver="${a.who}"]`, { timeout: 15000 });
  lastPage = a.page;
  a.page.off('request', capture);
  a.signInBody = sent[0];
  out('signed_in', { approver: await a.page.getAttribute('#who', 'data-approver') });
}

// Clicks `kind` on the detail page of `id` with the POST's body changed by
// `mutate` (an attacker between the page and the API, or a page an attacker
// serves); the message the page shows and the assertion that went out.
async function tamperedVerdict(a, id, mutate, pageRoute) {
  const routes = [];
  let sent = null;
  const approvals = `${ORIGIN}/v1/withdrawals/${id}/approvals`;
  const post = async (route) => {
    const body = JSON.parse(route.request().postData());
    if (mutate) {
      mutate(body);
    }
    sent = body;
    await route.continue({ postData: JSON.stringify(body) });
  };
  await a.page.route(approvals, post);
  routes.push([approvals, post]);
  if (pageRoute) {
    const url = `${ORIGIN}/v1/withdrawals/${id}`;
    await a.page.route(url, pageRoute);
    routes.push([url, pageRoute]);
  }
  try {
    // Away and back, so the detail page fetches the withdrawal again.
    await a.page.goto(`${ORIGIN}/app/#/pending`);
    await a.page.waitForSelector('#pending-view', { state: 'visible' });
    await openDetail(a, id);
    await a.page.waitForSelector('#approve', { state: 'visible', timeout: 10000 });
    await a.page.evaluate(() => {
      document.getElementById('message').textContent = '';
    });
    await a.page.click('#approve');
    await a.page.waitForFunction(
      () => {
        const m = document.getElementById('message');
        return m && (m.textContent.startsWith('Refused') || m.textContent.startsWith('Approved'));
      },
      null,
      { timeout: 20000 },
    );
    return { message: await text(a.page, '#message'), webauthn: sent && sent.webauthn };
  } finally {
    for (const [url, handler] of routes) {
      await a.page.unroute(url, handler);
    }
  }
}

// A withdrawal's JSON as the API gave it, rewritten by `edit`.
// (Fetched straight from the coordinator with the page's cookie: the
// test's name for it, custos.test, resolves only through the browser's
// proxy.)
function rewrite(edit) {
  return async (route) => {
    const headers = await route.request().allHeaders();
    const r = await raw('GET', new URL(route.request().url()).pathname, { cookie: headers.cookie || '' });
    const w = JSON.parse(r.body);
    if (r.status === 200) {
      edit(w);
    }
    await route.fulfill({ status: r.status, contentType: 'application/json', body: JSON.stringify(w) });
  };
}

const hexToText = (h) => Buffer.from(h, 'hex').toString('utf8');
const textToHex = (t) => Buffer.from(t, 'utf8').toString('hex');

async function openDetail(a, id) {
  await a.page.goto(`${ORIGIN}/app/#/w/${id}`);
  await a.page.waitForSelector(`#detail-id:has-text("${id}")`);
  await a.page.waitForSelector('[data-field="amount_base"]');
}

const text = (page, sel) => page.textContent(sel).then((t) => (t || '').trim());

async function fields(page) {
  const f = {};
  for (const name of ['withdrawal_id', 'wallet', 'chain', 'asset', 'amount_units', 'amount_base', 'destination', 'label', 'fee_cap', 'rule', 'expiry']) {
    f[name] = await text(page, `[data-field="${name}"]`);
  }
  f.state = await page.getAttribute('[data-field="state"] [data-state]', 'data-state');
  f.risk = await page.getAttribute('#risk', 'data-score');
  f.mismatch_hidden = await page.isHidden('#mismatch');
  return f;
}

async function verdict(a, id, kind, reason) {
  await openDetail(a, id);
  if (reason) {
    await a.page.fill(`#${kind}-reason`, reason);
  }
  await a.page.click(`#${kind}`);
  const want = { approve: 'Approved', reject: 'Rejected', cancel: 'Cancelled' }[kind];
  await a.page.waitForFunction(
    (w) => {
      const m = document.getElementById('message');
      return m && (m.textContent.startsWith(w) || m.textContent.startsWith('Refused'));
    },
    want,
    { timeout: 20000 },
  );
  const message = await text(a.page, '#message');
  out('verdict', { approver: a.who, withdrawal: id, kind, message });
  if (!message.startsWith(want)) {
    throw new Error(`${a.who} ${kind} ${id}: ${message}`);
  }
}

const stateOf = (page) =>
  page.getAttribute('[data-field="state"] [data-state]', 'data-state').catch(() => null);

async function waitState(page, states, ms) {
  await page.waitForFunction(
    (s) => {
      const e = document.querySelector('[data-field="state"] [data-state]');
      return e && s.includes(e.getAttribute('data-state'));
    },
    states,
    { timeout: ms },
  );
  return stateOf(page);
}

// Enrolls approver `who` on the enrollment page with a fresh virtual
// authenticator: the policy lines the page shows, and the passkey the
// authenticator made (its private key, as CDP exports it).
async function enroll(browser, who) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  await page.goto(`${ORIGIN}/app/#/enroll`);
  await page.fill('#enroll-id', who);
  await page.click('#enroll');
  await page.waitForSelector('#enroll-result:not([hidden])', { timeout: 15000 });
  const enrolledText = await text(page, '#enroll-result');
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  await ctx.close();
  return { text: enrolledText, credential: credentials[0] };
}

// The second cluster's run: approvers enrolled in the first sign in with
// the passkeys they made there and approve APP_W_APPROVE.
async function enrolledMain(browser) {
  const creds = JSON.parse(env('APP_CREDENTIALS'));
  const seen = [];
  const pages = [];
  for (const who of Object.keys(creds)) {
    const a = await approverContext(browser, who, creds[who]);
    await signIn(a);
    await verdict(a, W.approve, 'approve');
    pages.push(a);
  }
  seen.push(await waitState(pages[0].page, ['time_locked', 'signing', 'signed'], 30000));
  seen.push(await waitState(pages[0].page, ['signed', 'broadcast', 'confirmed'], 120000));
  const approvers = await pages[0].page.$$eval('#approvals li[data-approver]', (l) => l.map((x) => x.getAttribute('data-approver')));
  out('enrolled_approved', { withdrawal: W.approve, seen, approvers });
  out('done', {});
}

async function main() {
  const p = await proxy();
  const cert = new crypto.X509Certificate(fs.readFileSync(env('APP_CERT')));
  const spki = crypto
    .createHash('sha256')
    .update(cert.publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-background-networking',
      `--proxy-server=http://127.0.0.1:${p.address().port}`,
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
  });
  try {
    if (ENROLLED) {
      await enrolledMain(browser);
      return;
    }
    // Not signed in: the page, its headers, and no data.
    const anon = await browser.newContext();
    const page = await anon.newPage();
    const res = await page.goto(`${ORIGIN}/app/`);
    const h = res.headers();
    out('headers', {
      status: res.status(),
      csp: h['content-security-policy'] || '',
      nosniff: h['x-content-type-options'] || '',
      referrer: h['referrer-policy'] || '',
      frame: h['x-frame-options'] || '',
    });
    await page.waitForSelector('#signin', { state: 'visible' });
    const anonCalls = await page.evaluate(async () => {
      const r = {};
      for (const p of ['/v1/withdrawals/pending', '/v1/withdrawals', '/app/session', '/app/events', '/app/reports/volume', '/app/reports/heatmap/csv']) {
        const x = await fetch(p);
        r[p] = { status: x.status, body: await x.text() };
      }
      return r;
    });
    out('unauthenticated', { calls: anonCalls });
    await anon.close();

    // Enrollment: new approvers create passkeys and get the policy lines;
    // the test puts ivan's and judy's in a policy and they approve with
    // them (enrolledMain), so their authenticators' credentials go out too.
    const enrolled = {};
    for (const who of ['heidi', 'ivan', 'judy']) {
      enrolled[who] = await enroll(browser, who);
    }
    out('enrolled', { text: enrolled.heidi.text, approvers: enrolled });

    const frank = await approverContext(browser, 'frank');
    const grace = await approverContext(browser, 'grace');
    await signIn(frank);

    // The sign-in frank's browser sent, sent again: its challenge is spent.
    const replayedSignIn = await raw('POST', '/app/session', { 'Content-Type': 'application/json', Origin: ORIGIN }, frank.signInBody);
    // A passkey no approver of the policy holds: the page says so.
    const mallory = await approverContext(browser, 'mallory');
    await mallory.page.goto(`${ORIGIN}/app/`);
    await mallory.page.waitForSelector('#signin', { state: 'visible' });
    await mallory.page.click('#signin');
    await mallory.page.waitForFunction(() => document.getElementById('message').textContent.startsWith('Sign-in failed'), null, { timeout: 15000 });
    const unknown = { message: await text(mallory.page, '#message'), nav_hidden: await mallory.page.isHidden('#nav') };
    const malloryData = await mallory.page.evaluate(async () => (await fetch('/v1/withdrawals/pending')).status);
    await mallory.ctx.close();
    out('bad_sign_in', { replayed: replayedSignIn, unknown: { ...unknown, pending_status: malloryData } });

    // The pending list shows the withdrawals.
    await frank.page.waitForSelector(`#pending tr[data-id="${W.approve}"]`);
    const listed = await frank.page.$$eval('#pending tr[data-id]', (rows) => rows.map((r) => r.getAttribute('data-id')));
    out('pending', { listed });
    await frank.page.screenshot({ path: path.join(SHOTS, 'approvals-pending.png') });

    // CSRF: the session cookie without the token, or with a foreign origin.
    const cookie = (await frank.ctx.cookies(ORIGIN)).find((c) => c.name === '__Host-custos_session');
    out('cookie', {
      name: cookie.name,
      httpOnly: cookie.httpOnly,
      secure: cookie.secure,
      sameSite: cookie.sameSite,
      path: cookie.path,
      lifetime: Math.round(cookie.expires - Date.now() / 1000),
    });
    const csrf = await frank.page.evaluate(async () => (await (await fetch('/app/session')).json()).csrf_token);
    const body = JSON.stringify({ approver: 'frank', verdict: 'reject', reason: 'csrf' });
    const noToken = await frank.page.evaluate(async ([id, b]) => {
      const x = await fetch(`/v1/withdrawals/${id}/approvals`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: b });
      return { status: x.status, body: await x.text() };
    }, [W.approve, body]);
    const base = { 'Content-Type': 'application/json', Cookie: `${cookie.name}=${cookie.value}` };
    const foreign = await raw('POST', `/v1/withdrawals/${W.approve}/approvals`, { ...base, 'X-CSRF-Token': csrf, Origin: 'https://evil.test' }, body);
    const wrongToken = await raw('POST', `/v1/withdrawals/${W.approve}/approvals`, { ...base, 'X-CSRF-Token': 'x'.repeat(43), Origin: ORIGIN }, body);
    const noOrigin = await raw('POST', `/v1/withdrawals/${W.approve}/approvals`, { ...base, 'X-CSRF-Token': csrf }, body);
    const asGrace = await raw(
      'POST',
      `/v1/withdrawals/${W.approve}/approvals`,
      { ...base, 'X-CSRF-Token': csrf, Origin: ORIGIN },
      JSON.stringify({ approver: 'grace', verdict: 'approve' }),
    );
    const forged = await raw('GET', '/v1/withdrawals/pending', { Cookie: `${cookie.name}=${'A'.repeat(43)}` });
    out('csrf', { no_token: noToken, foreign_origin: foreign, wrong_token: wrongToken, no_origin: noOrigin, as_other_approver: asGrace, forged_session: forged });

    // The detail page, decoded from the statement.
    await openDetail(frank, W.approve);
    out('detail', { withdrawal: W.approve, fields: await fields(frank.page) });
    await frank.page.screenshot({ path: path.join(SHOTS, 'approvals-detail.png'), fullPage: true });

    // Two approvals; frank's page follows without a reload.
    await verdict(frank, W.approve, 'approve');
    await frank.page.evaluate(() => {
      window.__notReloaded = true;
    });
    await signIn(grace);
    await verdict(grace, W.approve, 'approve');
    const seen = [];
    seen.push(await waitState(frank.page, ['time_locked', 'signing', 'signed'], 30000));
    const countdown = await text(frank.page, '[data-field="time_lock"]').catch(() => '');
    const approvers = await frank.page.$$eval('#approvals li[data-approver]', (l) => l.map((x) => x.getAttribute('data-approver')));
    seen.push(await waitState(frank.page, ['signed', 'broadcast', 'confirmed'], 120000));
    const live = await frank.page.evaluate(() => window.__notReloaded === true);
    out('live', { withdrawal: W.approve, seen, countdown, approvers, not_reloaded: live });

    // Tampered and bad approvals of W.tamper by frank: each is refused with
    // the reason shown in the page, and nothing is recorded.
    const tampered = {};
    // A page that shows a smaller amount than the withdrawal's: the passkey
    // signs that statement, whose challenge is not the real one's.
    tampered.changed_amount = await tamperedVerdict(frank, W.tamper, null, rewrite((w) => {
      const real = BigInt(w.amount).toString(16).padStart(32, '0');
      const fake = (BigInt(w.amount) / 10n).toString(16).padStart(32, '0');
      if (w.statement.split(real).length !== 2) {
        throw new Error('the amount is not once in the statement');
      }
      w.statement = w.statement.replace(real, fake);
      w.amount = (BigInt(w.amount) / 10n).toString();
      w.amount_human = `${w.amount} base units`;
    }));
    tampered.uv_cleared = await tamperedVerdict(frank, W.tamper, (b) => {
      const flags = parseInt(b.webauthn.authenticator_data.slice(64, 66), 16) & ~0x04;
      b.webauthn.authenticator_data = b.webauthn.authenticator_data.slice(0, 64) + flags.toString(16).padStart(2, '0') + b.webauthn.authenticator_data.slice(66);
    });
    tampered.wrong_origin = await tamperedVerdict(frank, W.tamper, (b) => {
      b.webauthn.client_data_json = textToHex(hexToText(b.webauthn.client_data_json).replace(ORIGIN, 'https://evil.test'));
    });
    tampered.malformed = await tamperedVerdict(frank, W.tamper, (b) => {
      b.webauthn.signature = 'not hex';
    });
    // frank's passkey cloned with an old counter.
    const frankId = credential('frank').credentialId;
    await frank.cdp.send('WebAuthn.removeCredential', { authenticatorId: frank.authenticatorId, credentialId: frankId });
    await frank.cdp.send('WebAuthn.addCredential', { authenticatorId: frank.authenticatorId, credential: credential('frank', 1) });
    tampered.replayed_counter = await tamperedVerdict(frank, W.tamper, null);
    await frank.cdp.send('WebAuthn.removeCredential', { authenticatorId: frank.authenticatorId, credentialId: frankId });
    await frank.cdp.send('WebAuthn.addCredential', { authenticatorId: frank.authenticatorId, credential: credential('frank', 100000) });
    // A page left open until the approvals expired (it still offers approve).
    tampered.expired = await tamperedVerdict(frank, W.expired, null, rewrite((w) => {
      w.state = 'awaiting_approvals';
    }));
    const approvalsAfter = await frank.page.evaluate(async (ids) => {
      const r = {};
      for (const id of ids) {
        r[id] = (await (await fetch(`/v1/withdrawals/${id}`)).json()).approvals.length;
      }
      return r;
    }, [W.tamper, W.expired]);
    out('tampered', { cases: tampered, approvals_after: approvalsAfter });

    // Reject with a reason.
    await verdict(frank, W.reject, 'reject', 'destination not agreed with treasury');
    await waitState(frank.page, ['rejected'], 20000);
    out('rejected', {
      withdrawal: W.reject,
      state: await stateOf(frank.page),
      reason: await text(frank.page, '[data-field="reason"]'),
    });

    // Cancel during the time lock.
    await verdict(frank, W.cancel, 'approve');
    await verdict(grace, W.cancel, 'approve');
    await waitState(grace.page, ['time_locked'], 20000);
    await verdict(grace, W.cancel, 'cancel', 'payee asked to stop');
    await waitState(grace.page, ['cancelled'], 20000);
    out('cancelled', {
      withdrawal: W.cancel,
      state: await stateOf(grace.page),
      reason: await text(grace.page, '[data-field="reason"]'),
    });

    // Reports: charts drawn from the reports, and a CSV download.
    await frank.page.goto(`${ORIGIN}/app/#/reports`);
    await frank.page.waitForSelector('#reports[data-ready="true"]', { timeout: 20000 });
    const charts = await frank.page.$$eval('#reports figure', (figs) =>
      figs.map((f) => ({
        report: f.getAttribute('data-report'),
        rows: Number(f.getAttribute('data-rows')),
        bars: [...f.querySelectorAll('rect.bar')].map((b) => ({ day: b.getAttribute('data-day'), asset: b.getAttribute('data-asset'), amount: b.getAttribute('data-amount'), p50: b.getAttribute('data-p50') })),
        hot: [...f.querySelectorAll('rect.cell.hot')].map((c) => [Number(c.getAttribute('data-weekday')), Number(c.getAttribute('data-hour')), Number(c.getAttribute('data-flagged'))]),
        cells: f.querySelectorAll('rect.cell').length,
        error: (f.querySelector('.alert') || { textContent: '' }).textContent,
      })),
    );
    await frank.page.screenshot({ path: path.join(SHOTS, 'approvals-reports.png'), fullPage: true });
    const csv = {};
    for (const name of ['volume', 'heatmap']) {
      const [download] = await Promise.all([
        frank.page.waitForEvent('download', { timeout: 15000 }),
        frank.page.click(`#reports figure[data-report="${name}"] a.csv`),
      ]);
      csv[name] = { file: download.suggestedFilename(), text: fs.readFileSync(await download.path(), 'utf8') };
    }
    const badRange = await frank.page.evaluate(async () => {
      const x = await fetch('/app/reports/volume?from=2026-13-01');
      return { status: x.status, body: await x.text() };
    });
    out('reports', { charts, csv, bad_range: badRange });

    // History, then sign out.
    await frank.page.goto(`${ORIGIN}/app/#/history`);
    await frank.page.waitForSelector(`#history tr[data-id="${W.cancel}"]`);
    const history = await frank.page.$$eval('#history tr[data-id]', (rows) =>
      rows.map((r) => [r.getAttribute('data-id'), r.querySelector('[data-state]').getAttribute('data-state')]),
    );
    out('history', { rows: history });
    await frank.page.click('#signout');
    await frank.page.waitForSelector('#signin', { state: 'visible' });
    const after = await raw('GET', '/v1/withdrawals/pending', { Cookie: `${cookie.name}=${cookie.value}` });
    out('signed_out', { status: after.status });
    out('done', {});
  } catch (e) {
    const shown = lastPage ? await lastPage.textContent('#message').catch(() => '') : '';
    out('page_message', { text: shown });
    throw e;
  } finally {
    await browser.close();
    p.close();
  }
}

main().catch((e) => {
  out('error', { message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
