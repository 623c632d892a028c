// Owns the WhatsApp socket: login (QR or pairing code), auth state on disk, reconnects, and the
// connection state the HTTP API reports.
//
// Reconnect rules, by Baileys' DisconnectReason code (README.md, "The session, and how to reset it"):
//   401 loggedOut / 403 forbidden → the session is dead: stop, delete the stale creds, report
//                                   logged_out, and wait for a new login (POST /login, or
//                                   POST /instances/<id>/logout, or a restart).
// One manager per instance (business): its own session directory, socket, caches and backoff.
//   515 restartRequired           → WhatsApp asks for this right after the first pairing:
//                                   reconnect at once.
//   anything else                 → reconnect with exponential backoff, reset once open.
import fs from 'node:fs/promises';
import path from 'node:path';
import { DisconnectReason, makeCacheableSignalKeyStore } from '@whiskeysockets/baileys';
import { backoffDelay } from './backoff.js';
import { TtlCache } from './ttl-cache.js';
import { phoneFromJid } from './wa-events.js';

export class NotConnectedError extends Error {
  constructor() {
    super('WhatsApp is not connected');
  }
}

const SESSION_ENDED_CODES = new Set([DisconnectReason.loggedOut, DisconnectReason.forbidden]);

// Baileys' own default for its retry counter; the cache must outlive any single socket, or a
// message that fails to decrypt can loop retries across reconnects.
const RETRY_COUNTER_TTL_MS = 60 * 60 * 1000;
const RETRY_COUNTER_MAX = 10000;
// Signal keys are read on every message; this cache in front of the files spares most reads.
// One cache for the manager's lifetime (Baileys would otherwise start a new one, with its own
// timer, on every reconnect).
const SIGNAL_KEY_CACHE_TTL_MS = 5 * 60 * 1000;
const SIGNAL_KEY_CACHE_MAX = 10000;

async function ensurePrivateDir(dir) {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  // The folder holds the account's Signal keys; tighten it even if someone else created it.
  await fs.chmod(dir, 0o700);
}

// Only the auth-state files (all *.json at the top level) are removed, never the folder itself,
// so a mistyped WA_AUTH_DIR cannot turn a logout into deleting something else.
async function deleteAuthFiles(dir) {
  const names = await fs.readdir(dir).catch(() => []);
  await Promise.all(
    names.filter((name) => name.endsWith('.json')).map((name) => fs.rm(path.join(dir, name), { force: true })),
  );
}

export function createConnectionManager({
  makeSocket,
  authStateFactory,
  config,
  sessionDir,
  pairingNumber: firstPairingNumber = null,
  logger,
  libraryLogger,
  now = Date.now,
  timers = { setTimeout, clearTimeout },
  onConnectionChange,
  onIncomingMessages,
  onMessageUpdates,
}) {
  const msgRetryCounterCache = new TtlCache({ ttlMs: RETRY_COUNTER_TTL_MS, maxEntries: RETRY_COUNTER_MAX, now });
  const sentMessages = new TtlCache({ ttlMs: config.sentStoreTtlMs, maxEntries: config.sentStoreMax, now });
  const signalKeyCache = new TtlCache({ ttlMs: SIGNAL_KEY_CACHE_TTL_MS, maxEntries: SIGNAL_KEY_CACHE_MAX, now });

  let socket = null;
  let state = 'close';
  let meJid = null;
  let qr = null;
  let lastDisconnectCode = null;
  let stopped = true;
  let reconnectAttempt = 0;
  let reconnectTimer = null;
  // A pairing code pushes a notification to the phone; ask once per login attempt, not per
  // reconnect, so an unattended bridge does not keep buzzing the owner's phone.
  let pairingCodeRequested = false;
  let pairingNumber = firstPairingNumber;
  let lastReported = null;

  function reportIfChanged() {
    const report = { state, qr: qr !== null };
    if (lastReported && lastReported.state === report.state && lastReported.qr === report.qr) return;
    lastReported = report;
    onConnectionChange(report);
  }

  function setState(next) {
    state = next;
    reportIfChanged();
  }

  async function getMessage(key) {
    return sentMessages.get(key.id);
  }

  async function connect() {
    reconnectTimer = null;
    setState('connecting');
    try {
      await ensurePrivateDir(sessionDir);
      const { state: auth, saveCreds } = await authStateFactory(sessionDir);
      if (stopped) return;
      const sock = await makeSocket({
        auth: { creds: auth.creds, keys: makeCacheableSignalKeyStore(auth.keys, libraryLogger, signalKeyCache) },
        logger: libraryLogger,
        markOnlineOnConnect: false, // leave the owner's phone getting notifications
        syncFullHistory: false, // the bridge forwards live messages only
        msgRetryCounterCache,
        getMessage,
      });
      if (stopped) {
        // stop() ran while the socket was being made (the first one may wait for a version lookup).
        await sock.end(undefined);
        return;
      }
      socket = sock;
      sock.ev.process(async (events) => {
        try {
          await handleEvents(sock, saveCreds, events);
        } catch (error) {
          logger.error({ err: error }, 'error handling WhatsApp events');
        }
      });
    } catch (error) {
      logger.error({ err: error }, 'could not start WhatsApp socket');
      scheduleReconnect(error.message);
    }
  }

  function scheduleReconnect(reason) {
    reconnectAttempt += 1;
    const delayMs = backoffDelay(reconnectAttempt, config.reconnectBaseMs, config.reconnectMaxMs);
    logger.info({ attempt: reconnectAttempt, delayMs, lastDisconnectCode, reason }, 'reconnecting to WhatsApp');
    reconnectTimer = timers.setTimeout(connect, delayMs);
  }

  async function handleEvents(sock, saveCreds, events) {
    if (sock !== socket) return; // late events from a socket we already replaced
    if (events['creds.update']) await saveCreds();
    if (events['connection.update']) await handleConnectionUpdate(sock, events['connection.update']);
    if (events['messages.upsert']?.type === 'notify') onIncomingMessages(events['messages.upsert'].messages ?? [], sock);
    if (events['messages.update']) onMessageUpdates(events['messages.update']);
  }

  async function handleConnectionUpdate(sock, update) {
    if ('qr' in update) {
      qr = update.qr || null;
      reportIfChanged();
      if (qr && pairingNumber && !pairingCodeRequested && !sock.authState?.creds?.registered) {
        pairingCodeRequested = true;
        await requestPairingCode(sock);
      }
    }
    if (update.connection === 'open') {
      meJid = sock.user?.id ?? meJid;
      qr = null;
      reconnectAttempt = 0;
      logger.info({ me: phoneFromJid(meJid) }, 'WhatsApp connected');
      setState('open');
    } else if (update.connection === 'connecting') {
      setState('connecting');
    } else if (update.connection === 'close') {
      await handleClose(update.lastDisconnect?.error);
    }
  }

  async function requestPairingCode(sock) {
    try {
      const code = await sock.requestPairingCode(pairingNumber);
      logger.info({ pairingCode: code }, 'pairing code ready: on the phone open WhatsApp > Linked devices > Link with phone number');
    } catch (error) {
      logger.error({ err: error }, 'pairing code request failed');
    }
  }

  async function forgetSession() {
    meJid = null;
    // A new login reuses key ids (pre-key 1, 2…): nothing cached from the dead session may survive.
    for (const cache of [sentMessages, msgRetryCounterCache, signalKeyCache]) cache.flushAll();
    await deleteAuthFiles(sessionDir);
    setState('logged_out');
  }

  // Ends the live socket; with sendLogout it first tells WhatsApp this device leaves (best effort:
  // the caller removes the session files either way). The socket is cleared first, so whatever the
  // old one still emits (its close) is ignored by handleEvents.
  async function endSocket({ sendLogout = false } = {}) {
    timers.clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const sock = socket;
    socket = null;
    qr = null;
    if (!sock) return;
    if (sendLogout) {
      try {
        await sock.logout();
      } catch (error) {
        logger.warn({ err: error }, 'WhatsApp logout request failed; removing the session anyway');
      }
    }
    await sock.end(undefined);
  }

  async function handleClose(error) {
    socket = null;
    qr = null;
    lastDisconnectCode = error?.output?.statusCode ?? null;
    if (stopped) {
      setState('close');
      return;
    }
    if (SESSION_ENDED_CODES.has(lastDisconnectCode)) {
      logger.warn({ lastDisconnectCode }, 'WhatsApp session ended; deleting stale creds, a new login is needed');
      await forgetSession();
      return;
    }
    if (lastDisconnectCode === DisconnectReason.restartRequired) {
      logger.info('WhatsApp asked for a restart (normal after pairing); reconnecting now');
      await connect();
      return;
    }
    setState('close');
    scheduleReconnect(error?.message);
  }

  return {
    start() {
      stopped = false;
      pairingCodeRequested = false;
      return connect();
    },

    /**
     * Starts a fresh login after logged_out (with a pairing code to this number, when given).
     * Returns false when a connection is already live or pending.
     */
    login(newPairingNumber) {
      if (state !== 'logged_out' || stopped) return false;
      if (newPairingNumber) pairingNumber = newPairingNumber;
      pairingCodeRequested = false;
      connect();
      return true;
    },

    /**
     * Logs the account out of WhatsApp (the phone's "linked devices" entry goes away when
     * connected), deletes the session's auth files and (unless relogin is false) starts a new
     * login: a new QR code.
     */
    async logout({ relogin = true } = {}) {
      await endSocket({ sendLogout: state === 'open' });
      await forgetSession();
      if (relogin && !stopped) {
        pairingCodeRequested = false;
        await connect();
      }
    },

    async stop() {
      stopped = true;
      await endSocket();
      if (state !== 'logged_out') setState('close');
    },

    status() {
      return { state, me: phoneFromJid(meJid), qr, lastDisconnectCode };
    },

    ownJid() {
      return meJid;
    },

    /** Sends through the live socket; throws NotConnectedError when there is none (certain not sent). */
    async sendMessage(jid, content) {
      if (state !== 'open' || !socket) throw new NotConnectedError();
      const sent = await socket.sendMessage(jid, content);
      if (sent?.key?.id && sent.message) sentMessages.set(sent.key.id, sent.message);
      return sent;
    },
  };
}
