// Wires the parts together: connection manager → forwarder (inbound), HTTP API → connection
// manager (outbound). The WhatsApp socket factory is a parameter: index.js passes Baileys'
// makeWASocket, tests pass a fake.
import { useMultiFileAuthState } from '@whiskeysockets/baileys';
import QRCode from 'qrcode';
import { signingSecrets } from './config.js';
import { createConnectionManager, NotConnectedError } from './connection.js';
import { createForwarder } from './forwarder.js';
import { createHttpServer, errorResponse, jsonResponse } from './http-server.js';
import { createIdempotencyStore, IdempotencyConflictError } from './idempotency.js';
import { createLogger, libraryLogLevel } from './logger.js';
import { createSendPacer } from './send-pacer.js';
import { verifySignature } from './signing.js';
import { TtlCache } from './ttl-cache.js';
import { dedupeKey, messagePayload, recipientJid, skipReason, statusPayload } from './wa-events.js';

export const WEBHOOK_PATH = '/webhook/whatsapp/baileys';
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
const INBOUND_DEDUPE_MAX = 10000;

/**
 * @param {object} options
 * @param {(socketConfig: object) => object | Promise<object>} options.makeSocket  Baileys' makeWASocket or a compatible fake
 * @param {object} options.config  from loadConfig(), fields may be overridden
 * @param {(dir: string) => Promise<{state, saveCreds}>} [options.authStateFactory]  default useMultiFileAuthState
 * @param {typeof fetch} [options.fetch]  used to POST events to the app
 * @param {() => number} [options.now]  clock in milliseconds
 * @param {{setTimeout, clearTimeout}} [options.timers]  schedule the reconnects (default the global timers)
 * @param {object} [options.logger]  default: JSON lines on stdout at config.logLevel
 */
export function createBridge({
  makeSocket,
  config,
  authStateFactory = useMultiFileAuthState,
  fetch = globalThis.fetch,
  now = Date.now,
  timers = { setTimeout, clearTimeout },
  logger = createLogger({ level: config.logLevel }),
}) {
  const secrets = signingSecrets(config);

  const forwarder = createForwarder({
    url: `${config.appUrl}${WEBHOOK_PATH}`,
    secrets,
    fetch,
    now,
    logger: logger.child({ component: 'forwarder' }),
    maxAttempts: config.forwardMaxAttempts,
    backoffBaseMs: config.forwardBackoffBaseMs,
    backoffMaxMs: config.forwardBackoffMaxMs,
    queueMax: config.forwardQueueMax,
    timeoutMs: config.forwardTimeoutMs,
  });

  // Baileys replays queued events after a reconnect and sometimes emits one upsert twice.
  const recentInbound = new TtlCache({ ttlMs: config.inboundDedupeTtlMs, maxEntries: INBOUND_DEDUPE_MAX, now });

  function forwardIncoming(messages) {
    for (const msg of messages) {
      const skipped = skipReason(msg, config);
      if (skipped) {
        logger.debug({ id: msg.key?.id, reason: skipped }, 'inbound message not forwarded');
        continue;
      }
      const scope = dedupeKey(msg.key);
      if (recentInbound.has(scope)) {
        logger.info({ id: msg.key.id, chat: msg.key.remoteJid }, 'duplicate inbound message dropped');
        continue;
      }
      const payload = messagePayload(msg, { ownJid: connection.ownJid(), nowMs: now() });
      if (!payload) {
        // Not remembered as seen: a message that failed to decrypt can arrive again, readable.
        logger.info({ id: msg.key.id, stub: msg.messageStubType, detail: msg.messageStubParameters }, 'inbound message without content not forwarded');
        continue;
      }
      recentInbound.set(scope, true);
      forwarder.enqueue(payload);
    }
  }

  function forwardStatuses(updates) {
    for (const update of updates) {
      const payload = statusPayload(update);
      if (payload) forwarder.enqueue(payload);
    }
  }

  const connection = createConnectionManager({
    makeSocket,
    authStateFactory,
    config,
    logger: logger.child({ component: 'connection' }),
    libraryLogger: logger.child({ component: 'baileys' }, { level: libraryLogLevel(config.logLevel) }),
    now,
    timers,
    onConnectionChange: (report) => forwarder.enqueue({ event: 'connection', ...report }),
    onIncomingMessages: forwardIncoming,
    onMessageUpdates: forwardStatuses,
  });

  const pacer = createSendPacer({ minIntervalMs: config.sendMinIntervalMs, now });
  const idempotency = createIdempotencyStore({ ttlMs: config.idempotencyTtlMs, now });
  const notConnected = () => errorResponse(503, 'not_connected', 'WhatsApp is not connected; nothing was sent');

  async function sendText(jid, text) {
    if (connection.status().state !== 'open') return notConnected();
    try {
      // The state is checked again inside sendMessage: the connection may drop while queued.
      const sent = await pacer.run(jid, () => connection.sendMessage(jid, { text }));
      logger.info({ id: sent.key.id, to: jid }, 'message sent');
      return jsonResponse(200, { id: sent.key.id });
    } catch (error) {
      if (error instanceof NotConnectedError) return notConnected();
      // WhatsApp may or may not have taken it (e.g. a 429 rate-overlimit); the caller must not
      // assume "not sent" and resend through another provider.
      logger.error({ err: error, to: jid }, 'send failed');
      return errorResponse(502, 'send_failed', error.message);
    }
  }

  async function handleSend({ body }) {
    const { to, text, idempotency_key: idempotencyKey } = body;
    const jid = recipientJid(to);
    if (!jid) return errorResponse(400, 'invalid_to', '"to" must be an E.164 number like +9725XXXXXXXX');
    if (typeof text !== 'string' || text.trim() === '') return errorResponse(400, 'invalid_text', '"text" must be a non-empty string');
    if (idempotencyKey == null) return sendText(jid, text);
    if (typeof idempotencyKey !== 'string' || idempotencyKey === '' || idempotencyKey.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      return errorResponse(400, 'invalid_idempotency_key', `"idempotency_key" must be a string of 1–${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    try {
      // Every answer is kept except 503: only "certainly not sent" may be retried with the same key.
      // A 502 is kept because the first attempt may have reached the customer.
      return await idempotency.run(idempotencyKey, JSON.stringify([jid, text]), () => sendText(jid, text), (answer) => answer.status !== 503);
    } catch (error) {
      if (error instanceof IdempotencyConflictError) return errorResponse(409, 'idempotency_conflict', error.message);
      throw error;
    }
  }

  async function qrAnswer(render) {
    const { qr, state } = connection.status();
    if (!qr) {
      return errorResponse(404, 'no_qr', state === 'open' ? 'already connected' : 'no QR code yet; try again in a few seconds');
    }
    return render(qr);
  }

  const routes = {
    'GET /healthz': { handler: () => jsonResponse(200, { ok: true }) },
    'GET /status': {
      handler: () => {
        const { state, me, qr, lastDisconnectCode } = connection.status();
        return jsonResponse(200, { state, me, qr_available: qr !== null, last_disconnect_code: lastDisconnectCode });
      },
    },
    'GET /qr': {
      handler: () =>
        qrAnswer(async (qr) => ({
          status: 200,
          contentType: 'image/png',
          body: await QRCode.toBuffer(qr, { type: 'png', margin: 4, scale: 8 }),
        })),
    },
    'GET /qr.txt': {
      handler: () =>
        qrAnswer(async (qr) => ({
          status: 200,
          contentType: 'text/plain; charset=utf-8',
          body: await QRCode.toString(qr, { type: 'terminal', small: true }),
        })),
    },
    // The QR string itself links a phone to this account, so unlike the pictures it is signed.
    'GET /qr.json': {
      signed: true,
      handler: () => qrAnswer(async (qr) => jsonResponse(200, { qr })),
    },
    'POST /send': { signed: true, json: true, handler: handleSend },
    'POST /login': {
      signed: true,
      handler: () => jsonResponse(200, { started: connection.login(), state: connection.status().state }),
    },
  };

  const server = createHttpServer({
    routes,
    maxBodyBytes: config.maxBodyBytes,
    verifySignature: (header, rawBody) =>
      verifySignature({ header, rawBody, secrets, nowSeconds: now() / 1000, toleranceSeconds: config.signatureToleranceSec }),
    logger: logger.child({ component: 'http' }),
  });

  return {
    /** Listens on config.host:config.port (0 = any free port), then connects to WhatsApp. */
    async start() {
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const { address, port } = server.address();
      logger.info({ host: address, port }, 'bridge listening');
      await connection.start();
      return { host: address, port };
    },

    async stop() {
      await connection.stop();
      forwarder.stop();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },

    status: () => connection.status(),

    /** Resolves once every event forwarded so far has been delivered or dropped. */
    whenForwardingIdle: () => forwarder.whenIdle(),
  };
}
