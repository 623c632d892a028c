import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { createForwarder } from '../lib/forwarder.js';
import { verifySignature } from '../lib/signing.js';
import { memoryLogger, SECRET, startFakeApp, unusedPort } from './helpers.js';

let app;
afterEach(() => app?.close());

function forwarderTo(url, overrides = {}) {
  const log = memoryLogger();
  const forwarder = createForwarder({
    url,
    secrets: [SECRET],
    logger: log.logger,
    maxAttempts: 6,
    backoffBaseMs: 5,
    backoffMaxMs: 20,
    queueMax: 1000,
    timeoutMs: 1000,
    ...overrides,
  });
  return { forwarder, log };
}

const event = (id) => ({ event: 'status', id, status: 'delivered' });

test('each event is one signed JSON POST the app can verify over the raw body', async () => {
  app = await startFakeApp();
  const { forwarder } = forwarderTo(`${app.url}/webhook/whatsapp/baileys`);
  forwarder.enqueue(event('A'));
  await forwarder.whenIdle();

  assert.equal(app.requests.length, 1);
  const [request] = app.requests;
  assert.equal(request.method, 'POST');
  assert.equal(request.url, '/webhook/whatsapp/baileys');
  assert.equal(request.headers['content-type'], 'application/json');
  assert.deepEqual(request.json, event('A'));
  const check = verifySignature({
    header: request.headers['x-bridge-signature'],
    rawBody: request.raw,
    secrets: [SECRET],
    nowSeconds: Date.now() / 1000,
    toleranceSeconds: 300,
  });
  assert.deepEqual(check, { ok: true });
});

test('5xx is retried with backoff until delivered, each attempt freshly signed', async () => {
  app = await startFakeApp((request, n) => (n < 3 ? 503 : 204));
  const { forwarder } = forwarderTo(app.url);
  forwarder.enqueue(event('A'));
  await forwarder.whenIdle();
  assert.equal(app.requests.length, 3);
  assert.ok(app.requests.every((r) => r.json.id === 'A'));
  const [first, second, third] = app.requests.map((r) => r.at);
  assert.ok(second - first >= 4, 'waited about backoffBaseMs');
  assert.ok(third - second >= 9, 'then twice as long');
});

test('4xx is not retried', async () => {
  app = await startFakeApp(() => 400);
  const { forwarder, log } = forwarderTo(app.url);
  forwarder.enqueue(event('A'));
  forwarder.enqueue(event('B'));
  await forwarder.whenIdle();
  assert.deepEqual(app.requests.map((r) => r.json.id), ['A', 'B']);
  assert.ok(log.records().some((r) => r.msg.includes('not retrying') && r.status === 400));
});

test('after maxAttempts the event is dropped with one error line, and the next one goes on', async () => {
  app = await startFakeApp((request) => (request.json.id === 'A' ? 500 : 204));
  const { forwarder, log } = forwarderTo(app.url, { maxAttempts: 3 });
  forwarder.enqueue(event('A'));
  forwarder.enqueue(event('B'));
  await forwarder.whenIdle();
  assert.deepEqual(app.requests.map((r) => r.json.id), ['A', 'A', 'A', 'B']);
  const errors = log.records().filter((r) => r.level === 'error');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].id, 'A');
  assert.equal(errors[0].attempts, 3);
});

test('connection errors are retried too', async () => {
  const { forwarder, log } = forwarderTo(`http://127.0.0.1:${await unusedPort()}/webhook`, { maxAttempts: 3 });
  forwarder.enqueue(event('A'));
  await forwarder.whenIdle();
  const attempts = log.records().filter((r) => r.msg === 'forward attempt failed');
  assert.equal(attempts.length, 2);
  assert.ok(attempts.every((r) => r.error === 'ECONNREFUSED'));
});

test('a full queue drops the oldest events, with a log line', async () => {
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  app = await startFakeApp(() => 204);
  const slowFetch = async (...args) => {
    await gate;
    return fetch(...args);
  };
  const { forwarder, log } = forwarderTo(app.url, { queueMax: 2, fetch: slowFetch });
  for (const id of ['A', 'B', 'C', 'D']) forwarder.enqueue(event(id));
  release();
  await forwarder.whenIdle();
  // A was already in flight; of B, C, D only the newest two fit.
  assert.deepEqual(app.requests.map((r) => r.json.id), ['A', 'C', 'D']);
  assert.equal(log.records().filter((r) => r.msg.includes('dropped oldest')).length, 1);
});

test('the queue is bounded in bytes too: events carrying media push out the oldest', async () => {
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  app = await startFakeApp(() => 204);
  const slowFetch = async (...args) => {
    await gate;
    return fetch(...args);
  };
  const withMedia = (id) => ({ event: 'message', id, text: '', media: { kind: 'image', data: 'x'.repeat(10_000) } });
  const size = JSON.stringify(withMedia('A')).length;
  // Room for three such events, the one in flight included.
  const { forwarder, log } = forwarderTo(app.url, { queueMaxBytes: size * 3 + 10, fetch: slowFetch });
  for (const id of ['A', 'B', 'C', 'D', 'E']) forwarder.enqueue(withMedia(id));
  release();
  await forwarder.whenIdle();
  assert.deepEqual(app.requests.map((r) => r.json.id), ['A', 'D', 'E']);
  assert.equal(log.records().filter((r) => r.msg.includes('dropped oldest')).length, 2);
  // Once drained, the room is back.
  forwarder.enqueue(withMedia('F'));
  await forwarder.whenIdle();
  assert.equal(app.requests.at(-1).json.id, 'F');
});
