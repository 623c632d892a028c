// One instance: one business's WhatsApp account. It owns everything that belongs to that account
// and to nobody else: the session directory, the socket and its reconnects (connection.js), the
// queue of events to the app, duplicate suppression, send pacing and idempotency keys. Instances
// share nothing but the process, so one that loops on reconnects, is logged out or has a backlog
// of events leaves the others alone.
import { NotConnectedError, createConnectionManager } from './connection.js';
import { createForwarder } from './forwarder.js';
import { errorResponse, jsonResponse } from './http-server.js';
import { createIdempotencyStore, IdempotencyConflictError } from './idempotency.js';
import { libraryLogLevel } from './logger.js';
import { downloadInboundMedia, MediaRequestError, mediaOf, outboundMediaContent } from './media.js';
import { createSendPacer } from './send-pacer.js';
import { TtlCache } from './ttl-cache.js';
import { dedupeKey, messagePayload, recipientJid, skipReason, statusPayload } from './wa-events.js';

export const WEBHOOK_PATH = '/webhook/whatsapp/baileys';
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
const INBOUND_DEDUPE_MAX = 10000;

export function createInstance({ businessId, sessionDir, pairingNumber, makeSocket, authStateFactory, config, secrets, fetch, now, timers, logger }) {
  const log = logger.child({ business_id: businessId });
  const forwarder = createForwarder({
    url: `${config.appUrl}${WEBHOOK_PATH}`,
    secrets,
    fetch,
    now,
    logger: log.child({ component: 'forwarder' }),
    maxAttempts: config.forwardMaxAttempts,
    backoffBaseMs: config.forwardBackoffBaseMs,
    backoffMaxMs: config.forwardBackoffMaxMs,
    queueMax: config.forwardQueueMax,
    queueMaxBytes: config.forwardQueueMaxBytes,
    timeoutMs: config.forwardTimeoutMs,
  });
  // Every event names its instance: the app stores it under that business and no other.
  const emit = (payload) => forwarder.enqueue({ ...payload, business_id: businessId });

  // Baileys replays queued events after a reconnect and sometimes emits one upsert twice.
  const recentInbound = new TtlCache({ ttlMs: config.inboundDedupeTtlMs, maxEntries: INBOUND_DEDUPE_MAX, now });
  // Inbound messages are handled one after another: a text sent after a photo must not overtake
  // it while the photo downloads.
  let inboundChain = Promise.resolve();

  async function forwardMessage(msg, sock) {
    const payload = messagePayload(msg, { ownJid: connection.ownJid(), nowMs: now() });
    const media = mediaOf(msg.message);
    if (media) {
      payload.text = typeof media.content.caption === 'string' ? media.content.caption : '';
      payload.media = await downloadInboundMedia(msg, {
        maxBytes: config.mediaMaxBytes,
        timeoutMs: config.mediaDownloadTimeoutMs,
        logger: log,
        reuploadRequest: typeof sock?.updateMediaMessage === 'function' ? (m) => sock.updateMediaMessage(m) : undefined,
      });
      if (payload.media.error) log.warn({ id: msg.key.id, kind: media.kind, error: payload.media.error, size: payload.media.size }, 'inbound media refused');
    }
    emit(payload);
  }

  function forwardIncoming(messages, sock) {
    for (const msg of messages) {
      const skipped = skipReason(msg, config);
      if (skipped) {
        log.debug({ id: msg.key?.id, reason: skipped }, 'inbound message not forwarded');
        continue;
      }
      const scope = dedupeKey(msg.key);
      if (recentInbound.has(scope)) {
        log.info({ id: msg.key.id, chat: msg.key.remoteJid }, 'duplicate inbound message dropped');
        continue;
      }
      if (messagePayload(msg, { ownJid: null, nowMs: now() }) === null) {
        // Not remembered as seen: a message that failed to decrypt can arrive again, readable.
        log.info({ id: msg.key.id, stub: msg.messageStubType, detail: msg.messageStubParameters }, 'inbound message without content not forwarded');
        continue;
      }
      recentInbound.set(scope, true);
      inboundChain = inboundChain
        .then(() => forwardMessage(msg, sock))
        .catch((error) => log.error({ err: error, id: msg.key.id }, 'inbound message not forwarded'));
    }
  }

  function forwardStatuses(updates) {
    for (const update of updates) {
      const payload = statusPayload(update);
      if (payload) emit(payload);
    }
  }

  const connection = createConnectionManager({
    makeSocket,
    authStateFactory,
    config,
    sessionDir,
    pairingNumber,
    logger: log.child({ component: 'connection' }),
    libraryLogger: log.child({ component: 'baileys' }, { level: libraryLogLevel(config.logLevel) }),
    now,
    timers,
    onConnectionChange: (report) => emit({ event: 'connection', ...report }),
    onIncomingMessages: forwardIncoming,
    onMessageUpdates: forwardStatuses,
  });

  const pacer = createSendPacer({ minIntervalMs: config.sendMinIntervalMs, now });
  const idempotency = createIdempotencyStore({ ttlMs: config.idempotencyTtlMs, now });
  const notConnected = () => errorResponse(503, 'not_connected', 'WhatsApp is not connected; nothing was sent');

  async function deliver(jid, content) {
    if (connection.status().state !== 'open') return notConnected();
    try {
      // The state is checked again inside sendMessage: the connection may drop while queued.
      const sent = await pacer.run(jid, () => connection.sendMessage(jid, content));
      log.info({ id: sent.key.id, to: jid, media: Object.keys(content).find((k) => k !== 'text' && k !== 'caption' && k !== 'mimetype') }, 'message sent');
      return jsonResponse(200, { id: sent.key.id });
    } catch (error) {
      if (error instanceof NotConnectedError) return notConnected();
      // WhatsApp may or may not have taken it (e.g. a 429 rate-overlimit); the caller must not
      // assume "not sent" and resend through another provider.
      log.error({ err: error, to: jid }, 'send failed');
      return errorResponse(502, 'send_failed', error.message);
    }
  }

  /** POST /send for this instance (the body is already known to name it). */
  async function send(body) {
    const { to, text, idempotency_key: idempotencyKey, media } = body;
    const jid = recipientJid(to);
    if (!jid) return errorResponse(400, 'invalid_to', '"to" must be an E.164 number like +9725XXXXXXXX');
    let content;
    let fingerprint;
    if (media != null) {
      if (text != null && typeof text !== 'string') return errorResponse(400, 'invalid_text', '"text" (the caption) must be a string');
      try {
        const built = outboundMediaContent(media, text, { maxBytes: config.mediaMaxBytes });
        content = built.content;
        fingerprint = JSON.stringify([jid, text ?? '', media.kind, built.fingerprint]);
      } catch (error) {
        if (error instanceof MediaRequestError) return errorResponse(error.status, error.code, error.message);
        throw error;
      }
    } else {
      if (typeof text !== 'string' || text.trim() === '') return errorResponse(400, 'invalid_text', '"text" must be a non-empty string');
      content = { text };
      fingerprint = JSON.stringify([jid, text]);
    }
    if (idempotencyKey == null) return deliver(jid, content);
    if (typeof idempotencyKey !== 'string' || idempotencyKey === '' || idempotencyKey.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      return errorResponse(400, 'invalid_idempotency_key', `"idempotency_key" must be a string of 1–${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    try {
      // Every answer is kept except 503: only "certainly not sent" may be retried with the same key.
      // A 502 is kept because the first attempt may have reached the customer.
      return await idempotency.run(idempotencyKey, fingerprint, () => deliver(jid, content), (answer) => answer.status !== 503);
    } catch (error) {
      if (error instanceof IdempotencyConflictError) return errorResponse(409, 'idempotency_conflict', error.message);
      throw error;
    }
  }

  return {
    businessId,
    sessionDir,
    start: () => connection.start(),
    login: (pairing) => connection.login(pairing),
    logout: (options) => connection.logout(options),
    send,

    async stop() {
      await connection.stop();
      forwarder.stop();
    },

    status: () => connection.status(),

    /** The GET /instances entry. */
    describe() {
      const { state, me, qr, lastDisconnectCode } = connection.status();
      return { business_id: businessId, state, me, qr_available: qr !== null, last_disconnect_code: lastDisconnectCode };
    },

    /** Resolves once every event so far (inbound media included) has been delivered or dropped. */
    async whenForwardingIdle() {
      await inboundChain;
      await forwarder.whenIdle();
    },
  };
}
