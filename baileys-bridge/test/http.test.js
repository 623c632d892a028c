import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import jsQR from 'jsqr';
import { PNG } from 'pngjs';
import { delay, signedGet, signedPost, signRequest, startTestBridge, waitFor, waitForOpen } from './helpers.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

describe('HTTP API while connected', () => {
  let t;
  before(async () => {
    t = await startTestBridge();
    await waitForOpen(t.bridge);
  });
  after(() => t.stop());

  test('GET /healthz', async () => {
    const res = await fetch(`${t.base}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
  });

  test('GET /status reports the open connection and own number', async () => {
    const res = await fetch(`${t.base}/status?business_id=1`);
    assert.deepEqual(await res.json(), { state: 'open', me: '+972500000000', qr_available: false, last_disconnect_code: null });
  });

  test('unknown routes and wrong methods answer JSON errors', async () => {
    const missing = await fetch(`${t.base}/nope`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error, 'not_found');
    const wrongMethod = await fetch(`${t.base}/send`);
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
  });

  test('POST /send delivers through the socket and answers the WhatsApp id', async () => {
    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'שלום' });
    assert.equal(res.status, 200);
    const { id } = await res.json();
    const sent = t.makeSocket.sent.at(-1);
    assert.equal(sent.id, id);
    assert.equal(sent.jid, '972501234567@s.whatsapp.net');
    assert.deepEqual(sent.content, { text: 'שלום' });
  });

  test('"whatsapp:+…" and LID recipients are accepted', async () => {
    assert.equal((await signedPost(`${t.base}/send`, { business_id: 1, to: 'whatsapp:+972501234567', text: 'a' })).status, 200);
    assert.equal(t.makeSocket.sent.at(-1).jid, '972501234567@s.whatsapp.net');
    assert.equal((await signedPost(`${t.base}/send`, { business_id: 1, to: '123456789012345@lid', text: 'b' })).status, 200);
    assert.equal(t.makeSocket.sent.at(-1).jid, '123456789012345@lid');
  });

  test('an idempotent repeat returns the first answer and sends nothing', async () => {
    const body = { business_id: 1, to: '+972501234567', text: 'once', idempotency_key: 'crm-msg-42' };
    const before = t.makeSocket.sent.length;
    const first = await (await signedPost(`${t.base}/send`, body)).json();
    const second = await signedPost(`${t.base}/send`, body);
    assert.equal(second.status, 200);
    assert.deepEqual(await second.json(), first);
    assert.equal(t.makeSocket.sent.length, before + 1);

    const reused = await signedPost(`${t.base}/send`, { business_id: 1, ...body, text: 'something else' });
    assert.equal(reused.status, 409);
    assert.equal((await reused.json()).error, 'idempotency_conflict');
  });

  test('concurrent requests with one key send once', async () => {
    t.makeSocket.behaviour.sendDelayMs = 30;
    try {
      const body = { business_id: 1, to: '+972501234567', text: 'race', idempotency_key: 'crm-msg-43' };
      const before = t.makeSocket.sent.length;
      const answers = await Promise.all([1, 2, 3].map(() => signedPost(`${t.base}/send`, body).then((r) => r.json())));
      assert.equal(new Set(answers.map((a) => a.id)).size, 1);
      assert.equal(t.makeSocket.sent.length, before + 1);
    } finally {
      t.makeSocket.behaviour.sendDelayMs = 0;
    }
  });

  test('bad input answers 400', async () => {
    const cases = [
      [{ text: 'no recipient' }, 'invalid_to'],
      [{ to: '0501234567', text: 'local format' }, 'invalid_to'],
      [{ to: '+972501234567@s.whatsapp.net', text: 'jid' }, 'invalid_to'],
      [{ to: '+972501234567', text: '   ' }, 'invalid_text'],
      [{ to: '+972501234567' }, 'invalid_text'],
      [{ to: '+972501234567', text: 'x', idempotency_key: 7 }, 'invalid_idempotency_key'],
      ['{"to": ', 'bad_json'],
      ['[1, 2]', 'bad_json'],
    ];
    for (const [body, code] of cases) {
      const res = await signedPost(`${t.base}/send`, typeof body === 'string' ? body : { business_id: 1, ...body });
      assert.equal(res.status, 400, JSON.stringify(body));
      const answer = await res.json();
      assert.equal(answer.error, code);
      assert.equal(typeof answer.message, 'string');
    }
  });

  test('unsigned, badly signed and stale requests answer 401 and send nothing', async () => {
    const before = t.makeSocket.sent.length;
    const body = { business_id: 1, to: '+972501234567', text: 'forged' };
    const unsigned = await fetch(`${t.base}/send`, { method: 'POST', body: JSON.stringify(body) });
    assert.equal(unsigned.status, 401);
    assert.deepEqual(Object.keys(await unsigned.json()), ['error', 'message']);
    assert.equal((await signedPost(`${t.base}/send`, body, { secret: 'wrong-secret' })).status, 401);
    assert.equal((await signedPost(`${t.base}/send`, body, { nowSeconds: Date.now() / 1000 - 301 })).status, 401);
    assert.equal((await signedPost(`${t.base}/send`, body, { nowSeconds: Date.now() / 1000 + 301 })).status, 401);
    // Signed over other bytes than those sent (e.g. re-serialised JSON) is a mismatch.
    const header = signRequest('POST', `${t.base}/send`, JSON.stringify(body, null, 1));
    assert.equal((await signedPost(`${t.base}/send`, body, { header })).status, 401);
    assert.equal(t.makeSocket.sent.length, before);
  });

  test('bodies over the /send limit (base64 of WA_MEDIA_MAX_BYTES plus 64 KiB) answer 413', async () => {
    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'x'.repeat(Math.ceil(t.config.mediaMaxBytes / 3) * 4 + 70 * 1024) });
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error, 'body_too_large');
  });

  test('GET /qr answers 404 when there is no QR code', async () => {
    const res = await fetch(`${t.base}/qr?business_id=1`);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error, 'no_qr');
    assert.equal((await fetch(`${t.base}/qr.txt?business_id=1`)).status, 404);
  });
});

describe('HTTP API while logging in', () => {
  const QR = '2@fakeRef123,fakeNoiseKey=,fakeIdentityKey=,fakeAdv=';
  let t;
  before(async () => {
    t = await startTestBridge({ fake: { autoOpen: false, initialQr: QR } });
    await waitFor(() => t.status().qr, { what: 'QR code' });
  });
  after(() => t.stop());

  test('GET /status says a QR code is available', async () => {
    const status = await (await fetch(`${t.base}/status?business_id=1`)).json();
    assert.deepEqual(status, { state: 'connecting', me: null, qr_available: true, last_disconnect_code: null });
  });

  test('GET /qr is a PNG that decodes back to the QR string', async () => {
    const res = await fetch(`${t.base}/qr?business_id=1`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    const png = Buffer.from(await res.arrayBuffer());
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    assert.equal(png.toString('ascii', 12, 16), 'IHDR');
    const width = png.readUInt32BE(16);
    const height = png.readUInt32BE(20);
    assert.ok(width >= 200 && width === height, `square and scannable, got ${width}x${height}`);

    const image = PNG.sync.read(png);
    const decoded = jsQR(new Uint8ClampedArray(image.data), image.width, image.height);
    assert.equal(decoded?.data, QR);
  });

  test('GET /qr.json answers the QR string to a signed request only', async () => {
    const res = await signedGet(`${t.base}/qr.json?business_id=1`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { qr: QR });
    assert.equal((await fetch(`${t.base}/qr.json?business_id=1`)).status, 401);
    assert.equal((await signedGet(`${t.base}/qr.json?business_id=1`, { secret: 'not-the-secret' })).status, 401);
  });

  test('GET /qr.txt renders the QR code for a terminal', async () => {
    const res = await fetch(`${t.base}/qr.txt?business_id=1`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain/);
    const text = await res.text();
    assert.ok(text.split('\n').length > 10);
  });

  test('POST /send answers 503 not_connected and sends nothing', async () => {
    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'hi', idempotency_key: 'k-503' });
    assert.equal(res.status, 503);
    assert.equal((await res.json()).error, 'not_connected');
    assert.equal(t.makeSocket.sent.length, 0);
  });

  test('a key whose first try was not sent can be retried once connected', async () => {
    t.makeSocket.current().open();
    await waitForOpen(t.bridge);
    assert.equal((await fetch(`${t.base}/qr?business_id=1`)).status, 404, 'the QR code is gone once open');
    const qrJson = await signedGet(`${t.base}/qr.json?business_id=1`);
    assert.equal(qrJson.status, 404);
    assert.equal((await qrJson.json()).error, 'no_qr');
    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'hi', idempotency_key: 'k-503' });
    assert.equal(res.status, 200);
    assert.equal(t.makeSocket.sent.length, 1);
  });
});

describe('sending', () => {
  test('sends to one number are spaced; other numbers do not wait', async () => {
    const t = await startTestBridge({ config: { sendMinIntervalMs: 80 } });
    try {
      await waitForOpen(t.bridge);
      const answers = await Promise.all([
        signedPost(`${t.base}/send`, { business_id: 1, to: '+972501111111', text: '1' }),
        signedPost(`${t.base}/send`, { business_id: 1, to: '+972501111111', text: '2' }),
        signedPost(`${t.base}/send`, { business_id: 1, to: '+972502222222', text: '3' }),
      ]);
      assert.deepEqual(answers.map((r) => r.status), [200, 200, 200]);
      const at = (text) => t.makeSocket.sent.find((s) => s.content.text === text).at;
      assert.ok(at('2') - at('1') >= 75, `same number spaced, got ${at('2') - at('1')} ms`);
      // Measured against the held-up send, not the wall clock: a loaded machine delays everything.
      assert.ok(at('3') < at('2'), 'another number is not held up behind the spacing');
    } finally {
      await t.stop();
    }
  });

  test('a send that fails inside WhatsApp answers 502, and its key is spent', async () => {
    const t = await startTestBridge({ fake: { sendError: Object.assign(new Error('rate-overlimit'), { output: { statusCode: 429 } }) } });
    try {
      await waitForOpen(t.bridge);
      const body = { business_id: 1, to: '+972501234567', text: 'x', idempotency_key: 'k-502' };
      const res = await signedPost(`${t.base}/send`, body);
      assert.equal(res.status, 502);
      assert.equal((await res.json()).error, 'send_failed');
      // It may have gone out, so the key is spent: a repeat must not send a second copy.
      t.makeSocket.behaviour.sendError = null;
      assert.equal((await signedPost(`${t.base}/send`, body)).status, 502);
      assert.equal(t.makeSocket.sent.length, 0);
    } finally {
      await t.stop();
    }
  });

  test('a connection lost while a send waits its turn answers 503', async () => {
    const t = await startTestBridge({ config: { sendMinIntervalMs: 100, reconnectBaseMs: 5000 } });
    try {
      await waitForOpen(t.bridge);
      const first = signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'first' });
      await delay(20);
      const queued = signedPost(`${t.base}/send`, { business_id: 1, to: '+972501234567', text: 'queued' });
      await delay(20);
      await t.makeSocket.current().close(428);
      assert.equal((await first).status, 200);
      assert.equal((await queued).status, 503);
      assert.equal(t.makeSocket.sent.length, 1);
    } finally {
      await t.stop();
    }
  });
});
