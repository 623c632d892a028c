import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { delay, memoryLogger, signedPost, startFakeApp, startTestBridge, waitFor, waitForOpen } from './helpers.js';

async function withBridge(options, body) {
  const app = await startFakeApp();
  const t = await startTestBridge({ app, ...options });
  try {
    await body(t, app);
  } finally {
    await t.stop();
    await app.close();
  }
}

const socketCount = (t, n) => waitFor(() => t.makeSocket.sockets.length >= n, { what: `socket #${n}` });

for (const code of [401, 403]) {
  test(`${code}: no reconnect, state logged_out, stale creds deleted, new login on request`, () =>
    withBridge({}, async (t, app) => {
      await waitForOpen(t.bridge);
      const credsFile = path.join(t.sessionDir, 'creds.json');
      await waitFor(() => existsSync(credsFile), { what: 'creds saved on creds.update' });

      await t.makeSocket.current().close(code);
      await waitFor(() => t.status().state === 'logged_out', { what: 'logged_out' });
      await delay(100); // five reconnect base delays: nothing may happen
      assert.equal(t.makeSocket.sockets.length, 1);
      const status = await (await fetch(`${t.base}/status?business_id=1`)).json();
      assert.deepEqual(status, { state: 'logged_out', me: null, qr_available: false, last_disconnect_code: code });
      await assert.rejects(fs.stat(credsFile), { code: 'ENOENT' });
      await t.bridge.whenForwardingIdle();
      assert.deepEqual(app.events('connection').at(-1), { event: 'connection', state: 'logged_out', qr: false, business_id: 1 });

      const login = await signedPost(`${t.base}/login`, { business_id: 1 });
      assert.deepEqual(await login.json(), { started: true, state: 'connecting' });
      await waitForOpen(t.bridge);
      assert.equal(t.makeSocket.sockets.length, 2);
      const again = await signedPost(`${t.base}/login`, { business_id: 1 });
      assert.deepEqual(await again.json(), { started: false, state: 'open' });
    }));
}

test('transient closes reconnect with growing backoff, reset once open', () => {
  // The waits the bridge asks for, exactly: what it measures on the wall clock also holds on a loaded machine.
  const delays = [];
  const timers = {
    setTimeout: (fn, ms) => {
      delays.push(ms);
      return setTimeout(fn, ms);
    },
    clearTimeout,
  };
  return withBridge({ fake: { autoOpen: false }, timers }, async (t) => {
    await socketCount(t, 1);
    await t.makeSocket.sockets[0].close(428);
    assert.equal(t.status().state, 'close');
    await socketCount(t, 2);
    await t.makeSocket.sockets[1].close(500);
    await socketCount(t, 3);
    await t.makeSocket.sockets[2].close(408);
    await socketCount(t, 4);
    const [s0, s1, s2, s3] = t.makeSocket.sockets.map((s) => s.createdAt);
    assert.ok(s1 - s0 >= 18, `first retry after ~20 ms, got ${s1 - s0}`);
    assert.ok(s2 - s1 >= 38, `then ~40 ms, got ${s2 - s1}`);
    assert.ok(s3 - s2 >= 78, `then ~80 ms, got ${s3 - s2}`);
    assert.deepEqual(delays, [20, 40, 80]);
    assert.equal(t.status().lastDisconnectCode, 408);

    t.makeSocket.sockets[3].open();
    await waitForOpen(t.bridge);
    const closedAt = Date.now();
    await t.makeSocket.sockets[3].close(440);
    await socketCount(t, 5);
    assert.deepEqual(delays, [20, 40, 80, 20], 'backoff starts over after a successful open');
    assert.ok(t.makeSocket.sockets[4].createdAt - closedAt >= 18, 'after the base delay');
  });
});

test('515 restartRequired reconnects at once', () =>
  withBridge({ config: { reconnectBaseMs: 5000 } }, async (t, app) => {
    await waitForOpen(t.bridge);
    await t.makeSocket.current().close(515);
    await socketCount(t, 2);
    await waitForOpen(t.bridge);
    await t.bridge.whenForwardingIdle();
    assert.ok(!app.events('connection').some((e) => e.state === 'close'), 'a restart is not reported as a close');
  }));

test('events from a replaced socket are ignored', () =>
  withBridge({}, async (t, app) => {
    await waitForOpen(t.bridge);
    const old = t.makeSocket.current();
    await old.close(515);
    await socketCount(t, 2);
    await waitForOpen(t.bridge);
    old.inject([{ key: { remoteJid: '972501234567@s.whatsapp.net', id: 'LATE' }, message: { conversation: 'late' } }]);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('message'), []);
  }));

test('stop() ends the socket without reconnecting or logging out', () =>
  withBridge({}, async (t) => {
    await waitForOpen(t.bridge);
    await t.bridge.stop();
    await delay(60);
    assert.equal(t.makeSocket.sockets.length, 1);
    assert.equal(t.status().state, 'close');
    await fs.stat(path.join(t.sessionDir, 'creds.json'));
  }));

test('socket config: session dir private, offline presence, shared retry cache, getMessage from sent store', () =>
  withBridge({}, async (t) => {
    await waitForOpen(t.bridge);
    const stat = await fs.stat(t.sessionDir);
    assert.equal(stat.mode & 0o777, 0o700);

    const first = t.makeSocket.current().config;
    assert.equal(first.markOnlineOnConnect, false);
    assert.ok(first.auth.creds && first.auth.keys, 'auth state from useMultiFileAuthState');

    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'keep me' });
    const { id } = await res.json();
    assert.deepEqual(await first.getMessage({ id, remoteJid: '972501234567@s.whatsapp.net' }), { extendedTextMessage: { text: 'keep me' } });
    assert.equal(await first.getMessage({ id: 'unknown' }), undefined);

    await t.makeSocket.current().close(428);
    await socketCount(t, 2);
    assert.equal(t.makeSocket.current().config.msgRetryCounterCache, first.msgRetryCounterCache, 'outlives the socket');
  }));

test('pairing code is requested once per login when the instance was added with a pairing number', () => {
  const log = memoryLogger('info');
  return withBridge({ config: { instances: [] }, fake: { autoOpen: false, initialQr: '2@qr' }, logger: log.logger }, async (t) => {
    const added = await signedPost(`${t.base}/instances`, { business_id: 1, pairing_number: '+972 50-111-2222' });
    assert.equal(added.status, 201);
    await waitFor(() => t.makeSocket.pairingRequests.length === 1, { what: 'pairing request' });
    assert.deepEqual(t.makeSocket.pairingRequests, ['972501112222']);
    assert.ok(log.records().some((r) => r.pairingCode === 'FAKE1234'));

    await t.makeSocket.current().close(408); // QR codes ran out
    await socketCount(t, 2);
    await waitFor(() => t.status().qr, { what: 'new QR code' });
    assert.equal(t.makeSocket.pairingRequests.length, 1, 'no new push to the phone on every reconnect');
  });
});

test('a failing auth state store is retried with backoff', () => {
  let calls = 0;
  const flaky = async (dir) => {
    calls += 1;
    if (calls === 1) throw new Error('disk not ready');
    const { useMultiFileAuthState } = await import('@whiskeysockets/baileys');
    return useMultiFileAuthState(dir);
  };
  return withBridge({ authStateFactory: flaky }, async (t) => {
    await waitForOpen(t.bridge);
    assert.equal(calls, 2);
    assert.equal(t.makeSocket.sockets.length, 1);
  });
});
