// Many WhatsApp accounts in one bridge process: each business's instance links, sends and
// receives on its own, and one that is logged out or removed leaves the others alone.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { signatureHeader } from '../lib/signing.js';
import { memoryLogger, SECRET, signedGet, signedPost, signedRequest, signRequest, startFakeApp, startTestBridge, waitFor, waitForOpen } from './helpers.js';

const A = 101;
const B = 202;
const NUMBER = { [A]: '+972500000101', [B]: '+972500000202' };
const CUSTOMER = '972501234567@s.whatsapp.net';

const inbound = (id, text) => ({ key: { remoteJid: CUSTOMER, fromMe: false, id }, pushName: 'דנה', message: { conversation: text } });

// waitFor() polls synchronously; this one awaits the predicate.
async function eventually(predicate, what, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Links business `id` the way an owner does: read its QR code from the bridge, scan it with the phone. */
async function link(t, businessId) {
  const qr = await eventually(async () => {
    const res = await signedGet(`${t.base}/qr.json?business_id=${businessId}`);
    return res.status === 200 ? (await res.json()).qr : null;
  }, `QR code of business ${businessId}`);
  await t.makeSocket.scan(qr, NUMBER[businessId]);
  await waitForOpen(t.bridge, businessId);
}

describe('two businesses on one bridge', () => {
  let app;
  let t;
  before(async () => {
    app = await startFakeApp();
    t = await startTestBridge({ app, config: { instances: [A, B] }, fake: { linkByQr: true } });
    await link(t, A);
    await link(t, B);
  });
  after(async () => {
    await t.stop();
    await app.close();
  });

  test('each linked through its own QR code, and reports its own account', async () => {
    const qrEvents = app.events('connection').filter((e) => e.qr);
    assert.deepEqual(new Set(qrEvents.map((e) => e.business_id)), new Set([A, B]));
    for (const id of [A, B]) {
      const status = await (await fetch(`${t.base}/status?business_id=${id}`)).json();
      assert.deepEqual(status, { state: 'open', me: NUMBER[id], qr_available: false, last_disconnect_code: 515 });
      assert.ok(existsSync(path.join(t.authDir, `business-${id}`, 'creds.json')), 'each session in its own directory');
    }
    const list = await (await signedGet(`${t.base}/instances`)).json();
    assert.deepEqual(list.instances.map((i) => [i.business_id, i.state, i.me]), [[A, 'open', NUMBER[A]], [B, 'open', NUMBER[B]]]);
  });

  test('a message to each account reaches the app with that business id', async () => {
    app.requests.length = 0;
    t.makeSocket.current(NUMBER[A]).inject([inbound('TO-A', 'to A')]);
    t.makeSocket.current(NUMBER[B]).inject([inbound('TO-B', 'to B')]);
    await t.bridge.whenForwardingIdle();
    const routed = app.events('message').map((e) => [e.id, e.business_id, e.to]).sort();
    assert.deepEqual(routed, [['TO-A', A, NUMBER[A]], ['TO-B', B, NUMBER[B]]]);
  });

  test('/send goes out through the named business only', async () => {
    const before = t.makeSocket.sent.length;
    for (const id of [A, B]) {
      const res = await signedPost(`${t.base}/send`, { business_id: id, to: '+972501234567', text: `from ${id}` });
      assert.equal(res.status, 200);
    }
    const sent = t.makeSocket.sent.slice(before).map((s) => [s.me, s.content.text]);
    assert.deepEqual(sent, [[NUMBER[A].slice(1), `from ${A}`], [NUMBER[B].slice(1), `from ${B}`]]);
  });

  test('requests that name no instance, or one that does not exist, are refused', async () => {
    const missing = await signedPost(`${t.base}/send`, { to: '+972501234567', text: 'x' });
    assert.equal(missing.status, 400);
    assert.equal((await missing.json()).error, 'invalid_business_id');
    for (const bad of ['abc', '0', '-3', '1.5']) {
      assert.equal((await fetch(`${t.base}/status?business_id=${bad}`)).status, 400, bad);
    }
    const unknown = await signedPost(`${t.base}/send`, { business_id: 999, to: '+972501234567', text: 'x' });
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).error, 'unknown_instance');
    assert.equal((await fetch(`${t.base}/status?business_id=999`)).status, 404);
    assert.equal((await signedGet(`${t.base}/qr.json?business_id=999`)).status, 404);
    assert.equal((await fetch(`${t.base}/status`)).status, 400);
  });

  test('one account logged out from its phone (401) leaves the other sending and receiving', async () => {
    app.requests.length = 0;
    await t.makeSocket.current(NUMBER[A]).close(401);
    await waitFor(() => t.status(A).state === 'logged_out', { what: 'A logged out' });
    assert.equal(existsSync(path.join(t.authDir, `business-${A}`, 'creds.json')), false, "A's stale creds deleted");
    assert.ok(existsSync(path.join(t.authDir, `business-${B}`, 'creds.json')), "B's session untouched");

    const toA = await signedPost(`${t.base}/send`, { business_id: A, to: '+972501234567', text: 'A is out' });
    assert.equal(toA.status, 503);
    const toB = await signedPost(`${t.base}/send`, { business_id: B, to: '+972501234567', text: 'B still works' });
    assert.equal(toB.status, 200);
    t.makeSocket.current(NUMBER[B]).inject([inbound('TO-B-2', 'still here')]);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('message').map((e) => [e.id, e.business_id]), [['TO-B-2', B]]);
    assert.deepEqual(
      app.events('connection').map((e) => [e.business_id, e.state]),
      [[A, 'logged_out']],
      'only A reported a change',
    );
    assert.equal(t.status(B).state, 'open');

    // A's owner links again through a new QR code; B never noticed.
    const login = await signedPost(`${t.base}/login`, { business_id: A });
    assert.deepEqual(await login.json(), { started: true, state: 'connecting' });
    await link(t, A);
    assert.equal(t.status(B).state, 'open');
  });
});

describe('the admin endpoints', () => {
  let app;
  let t;
  before(async () => {
    app = await startFakeApp();
    t = await startTestBridge({ app, config: { instances: [] }, fake: { linkByQr: true } });
  });
  after(async () => {
    await t.stop();
    await app.close();
  });

  test('POST /instances adds and starts an instance, idempotently', async () => {
    const added = await signedPost(`${t.base}/instances`, { business_id: A });
    assert.equal(added.status, 201);
    assert.equal((await added.json()).created, true);
    await link(t, A);
    const again = await signedPost(`${t.base}/instances`, { business_id: A });
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { business_id: A, state: 'open', me: NUMBER[A], qr_available: false, last_disconnect_code: 515, created: false });
    assert.equal(t.makeSocket.sockets.filter((s) => s.number === NUMBER[A].slice(1) && s.connection === 'open').length, 1, 'no second socket');
  });

  test('two requests adding the same business at once start one instance, one socket', async () => {
    const before = t.makeSocket.sockets.length;
    const answers = await Promise.all([1, 2, 3].map(() => signedPost(`${t.base}/instances`, { business_id: 303 })));
    assert.deepEqual(answers.map((r) => r.status).sort(), [200, 200, 201]);
    await eventually(() => t.makeSocket.sockets.length > before, 'the socket');
    assert.equal(t.makeSocket.sockets.length, before + 1);
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/303`)).status, 200);
  });

  test('POST /instances/<id>/logout logs the account out and shows a new QR code', async () => {
    await signedPost(`${t.base}/instances`, { business_id: B });
    await link(t, B);
    const res = await signedRequest('POST', `${t.base}/instances/${A}/logout`);
    assert.equal(res.status, 200);
    assert.deepEqual(t.makeSocket.logouts, [NUMBER[A].slice(1)], 'WhatsApp was told (the phone drops the linked device)');
    assert.equal(existsSync(path.join(t.authDir, `business-${A}`, 'creds.json')), false);
    await eventually(async () => (await signedGet(`${t.base}/qr.json?business_id=${A}`)).status === 200, 'new QR code');
    assert.equal(t.status(B).state, 'open', 'the other account stays connected');
    await link(t, A); // the owner can link again (or another phone)
  });

  test('DELETE /instances/<id> stops it and deletes its session, so it does not come back', async () => {
    const res = await signedRequest('DELETE', `${t.base}/instances/${A}`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { business_id: A, removed: true });
    assert.equal(existsSync(path.join(t.authDir, `business-${A}`)), false);
    assert.equal((await fetch(`${t.base}/status?business_id=${A}`)).status, 404);
    const list = await (await signedGet(`${t.base}/instances`)).json();
    assert.deepEqual(list.instances.map((i) => i.business_id), [B]);
    assert.equal(t.status(B).state, 'open');
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/${A}`)).status, 404);
  });

  test('unknown ids answer 404 unknown_instance; bad ids 400; unsigned 401', async () => {
    const unknown = await signedRequest('POST', `${t.base}/instances/777/logout`);
    assert.equal(unknown.status, 404);
    assert.deepEqual(await unknown.json(), { error: 'unknown_instance', message: 'no WhatsApp instance for business 777' });
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/abc`)).status, 400);
    assert.equal((await signedPost(`${t.base}/instances`, { business_id: 'x' })).status, 400);
    assert.equal((await signedPost(`${t.base}/instances`, { business_id: 5, pairing_number: '12' })).status, 400);
    assert.equal((await fetch(`${t.base}/instances`)).status, 401);
    assert.equal((await signedGet(`${t.base}/instances`, { secret: 'wrong' })).status, 401);
    assert.equal((await fetch(`${t.base}/instances`, { method: 'POST', body: JSON.stringify({ business_id: 9 }) })).status, 401);
    assert.equal((await fetch(`${t.base}/instances/${B}`, { method: 'DELETE' })).status, 401);
    assert.equal(t.status(B).state, 'open');
    assert.equal(t.bridge.instance(9), null, 'nothing added by an unsigned request');
  });
});

// A captured signed request must not be usable for anything but itself (within the 300 s window).
describe('a signature covers the method, path and query it was made for', () => {
  let app;
  let t;
  const log = memoryLogger('warn');
  before(async () => {
    app = await startFakeApp();
    t = await startTestBridge({ app, logger: log.logger, config: { instances: [A, B], previousSharedSecret: 'the-old-key' }, fake: { linkByQr: true } });
    await waitFor(() => t.status(A).qr && t.status(B).qr, { what: 'both QR codes' });
  });
  after(async () => {
    await t.stop();
    await app.close();
  });

  test("one business's QR request replayed for another business answers 401", async () => {
    const header = signRequest('GET', `${t.base}/qr.json?business_id=${A}`);
    const own = await signedGet(`${t.base}/qr.json?business_id=${A}`, { header });
    assert.equal(own.status, 200);
    assert.equal((await own.json()).qr, t.status(A).qr);
    for (const query of [`business_id=${B}`, `business_id=${B}&business_id=${A}`, `business_id=${A}&business_id=${B}`, `business_id=${A}&x=1`]) {
      const replayed = await signedGet(`${t.base}/qr.json?${query}`, { header });
      assert.equal(replayed.status, 401, query);
      const answer = await replayed.json();
      assert.equal(answer.error, 'unauthorized');
      assert.ok(!JSON.stringify(answer).includes(t.status(B).qr), 'no QR code in the refusal');
    }
    const ownB = await signedGet(`${t.base}/qr.json?business_id=${B}`);
    assert.equal(ownB.status, 200, "B's own signed request still works");
  });

  test('a GET or logout signature replayed as DELETE answers 401 and removes nothing', async () => {
    const asGet = signRequest('GET', `${t.base}/instances/${A}`);
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/${A}`, '', { header: asGet })).status, 401);
    const list = signRequest('GET', `${t.base}/instances`);
    assert.equal((await signedRequest('DELETE', `${t.base}/instances`, '', { header: list })).status, 405, 'no such route, signed or not');
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/${A}`, '', { header: list })).status, 401);
    const logout = signRequest('POST', `${t.base}/instances/${A}/logout`);
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/${A}`, '', { header: logout })).status, 401);
    assert.equal((await signedRequest('POST', `${t.base}/instances/${B}/logout`, '', { header: logout })).status, 401, 'nor for another business');
    const removeA = signRequest('DELETE', `${t.base}/instances/${A}`);
    assert.equal((await signedRequest('DELETE', `${t.base}/instances/${B}`, '', { header: removeA })).status, 401);
    assert.deepEqual(t.bridge.instances.list().map((i) => i.businessId), [A, B], 'both instances still there');
    assert.deepEqual(t.makeSocket.logouts, [], 'nobody was logged out');
  });

  test('a /send signature does not carry over to another route, and the old body-only scheme is refused', async () => {
    const body = JSON.stringify({ business_id: A });
    const send = signRequest('POST', `${t.base}/send`, body);
    assert.equal((await signedPost(`${t.base}/login`, body, { header: send })).status, 401);
    assert.equal((await signedPost(`${t.base}/instances`, body, { header: send })).status, 401);
    const eventStyle = signatureHeader([SECRET], '', Date.now() / 1000); // v1: what the bridge signs its events with
    assert.equal((await signedGet(`${t.base}/qr.json?business_id=${A}`, { header: eventStyle })).status, 401);
    assert.equal((await signedGet(`${t.base}/instances`, { header: eventStyle })).status, 401);
    assert.ok(log.records().some((line) => line.reason === 'wrong_scheme'), 'the log says the scheme is the wrong one');
  });

  test('during a key rotation a request signed with either key passes', async () => {
    const url = `${t.base}/qr.json?business_id=${A}`;
    for (const secrets of [[SECRET], ['the-old-key'], ['a-newer-key', SECRET], [SECRET, 'the-old-key']]) {
      assert.equal((await signedGet(url, { header: signRequest('GET', url, '', { secrets }) })).status, 200, secrets.join(' + '));
    }
    assert.equal((await signedGet(url, { header: signRequest('GET', url, '', { secrets: ['a-newer-key'] }) })).status, 401);
    const oldKeyForA = signRequest('GET', url, '', { secrets: ['the-old-key'] });
    assert.equal((await signedGet(`${t.base}/qr.json?business_id=${B}`, { header: oldKeyForA })).status, 401, 'bound under either key');
  });

});

test('at start: an instance for every business-<id> directory and every WA_INSTANCES id', async () => {
  const app = await startFakeApp();
  const t = await startTestBridge({ app, config: { instances: [] } });
  const authDir = t.authDir;
  await t.bridge.stop();
  for (const name of ['business-3', 'business-12', 'not-a-business', 'business-0', 'business-x']) {
    await fs.mkdir(path.join(authDir, name), { recursive: true });
  }
  const again = await startTestBridge({ app, config: { authDir, instances: [7, 3] } });
  try {
    assert.deepEqual(again.bridge.instances.list().map((i) => i.businessId), [3, 7, 12]);
    for (const id of [3, 7, 12]) await waitForOpen(again.bridge, id);
  } finally {
    await again.stop();
    await t.makeSocket.close();
    await app.close();
  }
});
