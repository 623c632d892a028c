// The real entry point as the Python suite runs it: index.js with WA_SOCKET_MODULE pointing at
// the fake socket and its control port.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SECRET, signedPost, startFakeApp, tempDir, unusedPort, waitFor } from './helpers.js';

const BRIDGE_DIR = fileURLToPath(new URL('..', import.meta.url));

function runBridge(env) {
  const child = spawn(process.execPath, ['index.js'], { cwd: BRIDGE_DIR, env: { PATH: process.env.PATH, ...env } });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (c) => (output.stdout += c));
  child.stderr.on('data', (c) => (output.stderr += c));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output, exited };
}

async function poll(url) {
  for (let i = 0; i < 200; i += 1) {
    try {
      const res = await fetch(url);
      if (res.ok) return res.json();
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`${url} never answered`);
}

test('refuses to start without WA_SHARED_SECRET, with one line on stderr', async () => {
  const { output, exited } = runBridge({});
  assert.equal(await exited, 1);
  assert.equal(output.stdout, '');
  assert.equal(output.stderr.trim().split('\n').length, 1);
  assert.match(output.stderr, /WA_SHARED_SECRET is required/);
});

describe('index.js with WA_SOCKET_MODULE=test/fakes/fake-socket.js', () => {
  let app;
  let sessionDir;
  let run;
  let base;
  let control;

  before(async () => {
    app = await startFakeApp();
    sessionDir = await tempDir();
    const [port, controlPort] = [await unusedPort(), await unusedPort()];
    base = `http://127.0.0.1:${port}`;
    control = `http://127.0.0.1:${controlPort}`;
    run = runBridge({
      WA_SHARED_SECRET: SECRET,
      WA_BAILEYS_PORT: String(port),
      WA_AUTH_DIR: sessionDir,
      WA_INSTANCES: '1',
      APP_URL: app.url,
      WA_SEND_MIN_INTERVAL_MS: '0',
      LOG_LEVEL: 'debug',
      WA_SOCKET_MODULE: 'test/fakes/fake-socket.js',
      FAKE_WA_CONTROL_PORT: String(controlPort),
      FAKE_WA_OPEN_DELAY_MS: '10',
    });
    await poll(`${base}/healthz`);
    await waitFor(() => app.events('connection').some((e) => e.state === 'open'), { what: 'open event', timeoutMs: 5000 });
  });

  after(async () => {
    run.child.kill('SIGTERM');
    await run.exited;
    await app.close();
    await fs.rm(sessionDir, { recursive: true, force: true });
  });

  test('reports the fake connection as open', async () => {
    assert.deepEqual(await poll(`${base}/status?business_id=1`), { state: 'open', me: '+972500000000', qr_available: false, last_disconnect_code: null });
    assert.equal((await poll(`${control}/state`)).connection, 'open');
  });

  test('an injected message reaches the app signed', async () => {
    const message = {
      key: { remoteJid: '140913951141911@lid', remoteJidAlt: '972501234567@s.whatsapp.net', fromMe: false, id: 'PROC-1' },
      pushName: 'Dana',
      messageTimestamp: 1767225590,
      message: { conversation: 'hello' },
    };
    const res = await fetch(`${control}/inject`, { method: 'POST', body: JSON.stringify(message) });
    assert.deepEqual(await res.json(), { ok: true, injected: 1 });
    await waitFor(() => app.events('message').length === 1, { what: 'forwarded message' });
    assert.deepEqual(app.events('message')[0], {
      event: 'message',
      id: 'PROC-1',
      chat: '140913951141911@lid',
      from: '+972501234567',
      lid: '140913951141911@lid',
      push_name: 'Dana',
      text: 'hello',
      timestamp: 1767225590,
      to: '+972500000000',
      business_id: 1,
    });
    assert.ok(app.requests.every((r) => /^t=\d+,v1=[0-9a-f]{64}$/.test(r.headers['x-bridge-signature'])));
  });

  test('a signed /send shows up in the control port\'s /sent', async () => {
    const res = await signedPost(`${base}/send`, { business_id: 1, to: '+972501234567', text: 'שלום', idempotency_key: 'p-1' });
    assert.equal(res.status, 200);
    const { id } = await res.json();
    const { sent } = await poll(`${control}/sent`);
    assert.deepEqual(sent.map((s) => [s.id, s.jid, s.content.text]), [[id, '972501234567@s.whatsapp.net', 'שלום']]);
  });

  test('status and disconnect controls drive the bridge', async () => {
    await fetch(`${control}/status`, { method: 'POST', body: JSON.stringify({ id: 'OUT-9', status: 'read' }) });
    await waitFor(() => app.events('status').length === 1, { what: 'status event' });
    assert.deepEqual(app.events('status')[0], { event: 'status', id: 'OUT-9', status: 'read', business_id: 1 });

    await fetch(`${control}/close`, { method: 'POST', body: JSON.stringify({ code: 401 }) });
    await waitFor(() => app.events('connection').at(-1)?.state === 'logged_out', { what: 'logged_out event' });
    assert.equal((await poll(`${base}/status?business_id=1`)).state, 'logged_out');
  });

  test('logs are JSON lines without the secret', () => {
    const lines = run.output.stdout.trim().split('\n');
    assert.ok(lines.length > 3);
    for (const line of lines) JSON.parse(line);
    assert.ok(!run.output.stdout.includes(SECRET));
  });
});
