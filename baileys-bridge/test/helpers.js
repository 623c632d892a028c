// Shared test scaffolding: a config with short timers, a fake Flask app, a bridge on a free port
// with the fake socket, and signed requests.
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createBridge } from '../lib/bridge.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { requestSignatureHeader } from '../lib/signing.js';
import { createFakeSocketFactory } from './fakes/fake-socket.js';

export const SECRET = 'test-shared-secret';
// The business of the one instance startTestBridge() starts unless told otherwise.
export const BUSINESS = 1;

export async function tempDir() {
  return fs.mkdtemp(path.join(os.tmpdir(), 'bridge-test-'));
}

export function testConfig(overrides = {}) {
  return {
    ...loadConfig({ WA_SHARED_SECRET: SECRET }),
    port: 0,
    sendMinIntervalMs: 0,
    forwardBackoffBaseMs: 5,
    forwardBackoffMaxMs: 20,
    forwardTimeoutMs: 1000,
    reconnectBaseMs: 20,
    reconnectMaxMs: 200,
    logLevel: 'silent',
    ...overrides,
  };
}

/** Collects log records in memory (tests assert on them; nothing reaches stdout). */
export function memoryLogger(level = 'debug') {
  const lines = [];
  const logger = createLogger({ level, stream: { write: (line) => lines.push(line) } });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l)) };
}

export function waitFor(predicate, { timeoutMs = 2000, intervalMs = 5, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = () => {
      const value = predicate();
      if (value) return resolve(value);
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, intervalMs);
    };
    poll();
  });
}

/** A port nothing listens on: connecting to it is refused. */
export async function unusedPort() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A stand-in for the Flask app's webhook. respond(request, n) returns the HTTP status for the
 * n-th request (1-based); default 204.
 */
export async function startFakeApp(respond = () => 204) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const request = { at: Date.now(), method: req.method, url: req.url, headers: req.headers, raw, json: JSON.parse(raw.toString('utf8')) };
      requests.push(request);
      res.writeHead(respond(request, requests.length));
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    events: (type) => requests.map((r) => r.json).filter((e) => !type || e.event === type),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * A bridge with the fake socket and a temporary WA_AUTH_DIR, running one instance (business
 * BUSINESS) unless config.instances says otherwise. Options: config overrides, fake socket
 * options, app (a startFakeApp() result; default: an app that refuses connections).
 * t.sessionDir is the first instance's session directory; t.status() its status.
 */
export async function startTestBridge({ config: overrides = {}, fake = {}, app, logger, authStateFactory, timers } = {}) {
  const authDir = await tempDir();
  const makeSocket = createFakeSocketFactory(fake);
  const config = testConfig({ authDir, instances: [BUSINESS], appUrl: app?.url ?? `http://127.0.0.1:${await unusedPort()}`, ...overrides });
  const first = config.instances[0] ?? BUSINESS;
  const sessionDir = path.join(authDir, `business-${first}`);
  const bridge = createBridge({
    makeSocket,
    config,
    logger: logger ?? createLogger({ level: 'silent' }),
    ...(authStateFactory && { authStateFactory }),
    ...(timers && { timers }),
  });
  const { port } = await bridge.start();
  const base = `http://127.0.0.1:${port}`;
  return {
    bridge,
    makeSocket,
    config,
    authDir,
    sessionDir,
    base,
    status: (businessId = first) => bridge.instance(businessId).status(),
    async stop() {
      await bridge.stop();
      await makeSocket.close();
      await fs.rm(authDir, { recursive: true, force: true });
    },
  };
}

/** The request target fetch() sends for url: its path and query, what a v2 signature covers. */
export function targetOf(url) {
  const { pathname, search } = new URL(url);
  return pathname + search;
}

/** A v2 X-Bridge-Signature for a request to the bridge, as the app makes it. */
export function signRequest(method, url, rawBody = '', { secrets = [SECRET], nowSeconds = Date.now() / 1000 } = {}) {
  return requestSignatureHeader(secrets, { method, target: targetOf(url), rawBody }, nowSeconds);
}

export function signedPost(url, body, { secret = SECRET, nowSeconds = Date.now() / 1000, header } = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-bridge-signature': header ?? signRequest('POST', url, raw, { secrets: [secret], nowSeconds }),
    },
    body: raw,
  });
}

export function waitForOpen(bridge, businessId = BUSINESS) {
  return waitFor(() => bridge.instance(businessId)?.status().state === 'open', { what: `business ${businessId} connected` });
}

/** A signed GET (empty body), e.g. /qr.json or /instances. */
export function signedGet(url, { secret = SECRET, header } = {}) {
  return fetch(url, { headers: { 'x-bridge-signature': header ?? signRequest('GET', url, '', { secrets: [secret] }) } });
}

/** A signed request with any method and a JSON (or empty) body. */
export function signedRequest(method, url, body = '', { secret = SECRET, header } = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const signature = header ?? signRequest(method, url, method === 'GET' ? '' : raw, { secrets: [secret] });
  return fetch(url, { method, headers: { 'content-type': 'application/json', 'x-bridge-signature': signature }, body: method === 'GET' ? undefined : raw });
}
