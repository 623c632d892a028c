// A stand-in for Baileys' makeWASocket that never talks to WhatsApp.
//
// Two ways to use it:
//  - In node tests: createFakeSocketFactory(options) returns a makeSocket function; drive the
//    sockets it made through makeSocket.current(me?) (open, showQr, close, inject, updateStatus)
//    and makeSocket.scan(qr, me) (a phone linking through a QR code).
//  - From outside (the Python suite): start the real bridge with
//    WA_SOCKET_MODULE=test/fakes/fake-socket.js and FAKE_WA_CONTROL_PORT=<port>; the default
//    export then serves the control API below on 127.0.0.1:<port>.
//
// Many instances (businesses) share one bridge process and therefore one factory. A socket whose
// session already holds an account (creds.me, saved by the bridge in that business's session
// directory) opens as that account, as WhatsApp does. With linkByQr a socket without one shows a
// QR code of its own and waits until a "phone" scans it; otherwise it opens as `me`.
//
// Media are delivered the way WhatsApp delivers them: the message carries url/directPath,
// mediaKey, fileEncSha256, fileSha256, fileLength…; the bytes are encrypted with Baileys' own
// media crypto (encryptedStream) and served by a local HTTPS server (fake-media-server.js). The
// bridge downloads them with Baileys' downloadMediaMessage, which builds the address from
// directPath and the host of url: https only, so the process needs NODE_EXTRA_CA_CERTS pointing at
// test/fakes/tls/media-server.crt (npm test sets it). Media sent with sendMessage go through
// Baileys' generateWAMessageContent and are "uploaded" to the same server.
//
// Control API (JSON in, JSON out). "me" (+E164 or digits) picks the socket of that account; without
// it, the most recent socket:
//   POST /inject  a WAMessage, or {"messages": [WAMessage…], "type": "notify"|"append", "me"?}
//                 → emits messages.upsert (type defaults to "notify")
//   POST /inject-media {"me"?, "from": "+9725…", "id", "kind": "audio"|"image"|"video"|"document"|"sticker",
//                 "mimetype", "data": base64, "ptt"?, "seconds"?, "caption"?, "file_name"?, "push_name"?}
//                 → encrypts and stores the bytes, then emits the media message
//   GET  /sent    → {"sent": [{"me", "jid", "content", "id", "at"}…]}: what sendMessage received (media
//                 as {kind, mimetype, file_name, caption, size, sha256})
//   POST /status  {"id", "status": "sent"|"delivered"|"read"|"played"|"failed"|<number>, "remoteJid"?, "me"?}
//                 → emits messages.update for one of our own messages
//   POST /qr      {"qr": "<string>"} → emits connection.update {qr}
//   POST /scan    {"qr", "me"} → the phone of number `me` scans that QR code: the socket showing it
//                 is linked to `me` (creds saved) and restarts (515), as after a real pairing
//   POST /open    → emits connection.update {connection: "open"}
//   POST /close   {"code": 401|403|408|428|440|500|515…, "me"?} → closes the socket with that code
//   GET  /state   → {"connection", "sockets", "pairing_requests", "qrs": {qr: connection}}
//
// Environment for the default export:
//   FAKE_WA_CONTROL_PORT  control API port (no control API when unset)
//   FAKE_WA_ME            own number of a socket without an account, digits only (default 972500000000)
//   FAKE_WA_OPEN_DELAY_MS delay before a new socket opens (default 50)
//   FAKE_WA_AUTO_OPEN     "0" keeps new sockets connecting until POST /open
//   FAKE_WA_QR            a QR string each new socket emits first (implies FAKE_WA_AUTO_OPEN=0)
//   FAKE_WA_LINK_BY_QR    "1": sockets without an account show a QR code of their own (see above)
import { EventEmitter } from 'node:events';
import crypto from 'node:crypto';
import http from 'node:http';
import { generateWAMessageContent, getContentType, normalizeMessageContent } from '@whiskeysockets/baileys';
import { createFakeMediaServer } from './fake-media-server.js';

const STATUS_CODES = { failed: 0, pending: 1, sent: 2, delivered: 3, read: 4, played: 5 };
const SILENT = { level: 'silent', child: () => SILENT, trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} };

function disconnectError(statusCode, message = `fake disconnect ${statusCode}`) {
  return Object.assign(new Error(message), { isBoom: true, output: { statusCode } });
}

const digitsOf = (number) => String(number ?? '').replace(/\D/g, '');

// Baileys' ev: plain listeners per event, plus process() handlers that get {event: data} maps.
class FakeEventStream extends EventEmitter {
  process(handler) {
    const listener = (map) => handler(map);
    this.on('event', listener);
    return () => this.off('event', listener);
  }

  emit(event, data) {
    const handled = super.emit(event, data);
    if (event !== 'event') super.emit('event', { [event]: data });
    return handled;
  }
}

let qrSerial = 0;

class FakeSocket {
  constructor(config, { meJid, openDelayMs, autoOpen, initialQr, linkByQr, factory }) {
    this.config = config;
    this.createdAt = Date.now();
    this.authState = config.auth;
    this.ev = new FakeEventStream();
    this.factory = factory;
    this.connection = 'connecting';
    this.qr = null;
    // An account already in the session opens as itself; otherwise as the factory's number.
    const linked = this.authState?.creds?.me?.id;
    this.meJid = linked ?? meJid;
    // Like Baileys, announce "connecting" after the caller had a chance to subscribe.
    setImmediate(() => {
      if (this.connection !== 'connecting') return;
      this.ev.emit('connection.update', { connection: 'connecting' });
      if (initialQr) this.showQr(initialQr);
      else if (linkByQr && !linked) this.showQr(`2@fake-qr-${(qrSerial += 1)}-${crypto.randomBytes(6).toString('hex')},noise=,identity=,adv=`);
      else if (autoOpen || linked) setTimeout(() => this.open(), openDelayMs);
    });
  }

  get user() {
    return this.authState?.creds?.me;
  }

  /** The account's number, digits only (null before one is known). */
  get number() {
    return this.meJid ? this.meJid.split(':')[0].split('@')[0] : null;
  }

  open() {
    if (this.connection === 'close') return;
    this.connection = 'open';
    this.qr = null;
    if (this.authState?.creds) {
      Object.assign(this.authState.creds, { me: { id: this.meJid, name: 'Fake Business' }, registered: true });
      this.ev.emit('creds.update', { me: this.authState.creds.me, registered: true });
    }
    this.ev.emit('connection.update', { connection: 'open' });
  }

  showQr(qr) {
    this.qr = qr;
    this.ev.emit('connection.update', { qr });
  }

  /** The phone of `number` scanned this socket's QR code: the account is saved, then WhatsApp asks for a restart. */
  async link(number) {
    this.meJid = `${digitsOf(number)}:7@s.whatsapp.net`;
    this.qr = null;
    Object.assign(this.authState.creds, { me: { id: this.meJid, name: 'Fake Business' }, registered: true });
    this.ev.emit('creds.update', { me: this.authState.creds.me, registered: true });
    // Give the bridge time to write creds.json before the restart reads it back.
    await new Promise((resolve) => setTimeout(resolve, 30));
    await this.close(515);
  }

  close(statusCode) {
    return this.end(disconnectError(statusCode));
  }

  async end(error) {
    if (this.connection === 'close') return;
    this.connection = 'close';
    this.ev.emit('connection.update', { connection: 'close', lastDisconnect: { error, date: new Date() } });
  }

  async logout() {
    this.factory.logouts.push(this.number);
    await this.end(disconnectError(401, 'Intentional Logout'));
  }

  async requestPairingCode(phoneNumber) {
    this.factory.pairingRequests.push(phoneNumber);
    return 'FAKE1234';
  }

  inject(messages, type = 'notify') {
    const now = Math.floor(Date.now() / 1000);
    const filled = messages.map((m) => ({ messageTimestamp: now, ...m }));
    this.ev.emit('messages.upsert', { messages: filled, type });
  }

  /**
   * Delivers a media message from `from` (+E164), the bytes encrypted and served as WhatsApp does.
   * Returns the injected WAMessage.
   */
  async injectMedia({ from, id, kind, mimetype, data, ptt, seconds, caption, fileName, pushName, fields = {} }) {
    const uploaded = await this.factory.media.upload(data, kind);
    const content = { ...uploaded, mimetype, mediaKeyTimestamp: Math.floor(Date.now() / 1000) };
    if (kind === 'audio') Object.assign(content, { ptt: ptt === true, seconds: seconds ?? 0 });
    if (kind === 'video' && seconds != null) content.seconds = seconds;
    if (caption && kind !== 'audio' && kind !== 'sticker') content.caption = caption;
    if (kind === 'document') content.fileName = fileName ?? 'file';
    const message = {
      key: { remoteJid: `${digitsOf(from)}@s.whatsapp.net`, fromMe: false, id: id ?? `3EB0${crypto.randomBytes(8).toString('hex').toUpperCase()}` },
      pushName: pushName ?? 'Customer',
      message: { [`${kind}Message`]: { ...content, ...fields } },
    };
    this.inject([message]);
    return message;
  }

  updateStatus(id, status, remoteJid = `${this.number}@s.whatsapp.net`) {
    const code = typeof status === 'number' ? status : STATUS_CODES[status];
    this.ev.emit('messages.update', [{ key: { id, remoteJid, fromMe: true }, update: { status: code } }]);
  }

  async sendMessage(jid, content) {
    if (this.connection !== 'open') throw disconnectError(428, 'Connection Closed');
    const { sendDelayMs, sendError } = this.factory.behaviour;
    if (sendDelayMs) await new Promise((resolve) => setTimeout(resolve, sendDelayMs));
    if (sendError) throw sendError;
    // What Baileys itself makes of the content: media are encrypted and "uploaded" to the fake
    // media server, and come back as e.g. a documentMessage with url, mediaKey and hashes.
    const message = 'text' in content
      ? { extendedTextMessage: { text: content.text } }
      : await generateWAMessageContent(content, { upload: this.factory.media.uploadFile, logger: SILENT });
    const id = `3EB0${crypto.randomBytes(8).toString('hex').toUpperCase()}`;
    this.factory.sent.push({ me: this.number, jid, content, message, id, at: Date.now() });
    return {
      key: { remoteJid: jid, fromMe: true, id },
      message,
      messageTimestamp: Math.floor(Date.now() / 1000),
      status: STATUS_CODES.pending,
    };
  }
}

/**
 * Options: me (digits), openDelayMs, autoOpen, initialQr, linkByQr, sendDelayMs, sendError (thrown
 * by sendMessage). The returned makeSocket has .sockets, .sent, .pairingRequests, .logouts,
 * .current(me?), .scan(qr, me), .media (the fake media server) and .behaviour ({sendDelayMs,
 * sendError}, which a test may change between sends).
 */
export function createFakeSocketFactory({
  me = '972500000000',
  openDelayMs = 10,
  autoOpen = true,
  initialQr = null,
  linkByQr = false,
  sendDelayMs = 0,
  sendError = null,
} = {}) {
  const factory = {
    sockets: [],
    sent: [],
    pairingRequests: [],
    logouts: [],
    behaviour: { sendDelayMs, sendError },
    media: createFakeMediaServer(),
  };
  function makeSocket(config) {
    const sock = new FakeSocket(config, { meJid: `${me}:7@s.whatsapp.net`, openDelayMs, autoOpen, initialQr, linkByQr, factory });
    factory.sockets.push(sock);
    return sock;
  }
  Object.assign(makeSocket, factory);
  /** The most recent socket, or the most recent one of the account `number`. */
  makeSocket.current = (number) => {
    if (!number) return factory.sockets.at(-1);
    const wanted = digitsOf(number);
    return factory.sockets.findLast((sock) => sock.number === wanted && sock.authState?.creds?.me) ?? null;
  };
  /** The phone of `number` scans `qr`: the socket showing it gets linked. */
  makeSocket.scan = async (qr, number) => {
    const sock = factory.sockets.findLast((s) => s.qr === qr && s.connection !== 'close');
    if (!sock) throw new Error('no socket shows that QR code');
    await sock.link(number);
    return sock;
  };
  makeSocket.close = () => factory.media.close();
  return makeSocket;
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch (error) {
        reject(error);
      }
    });
    req.on('error', reject);
  });
}

// What /sent shows of a send: the text, or a summary of the media (not the bytes).
function sentSummary({ me, jid, content, id, at }) {
  const kind = ['image', 'video', 'audio', 'document', 'sticker'].find((k) => k in content);
  if (!kind) return { me, jid, content, id, at };
  const bytes = Buffer.from(content[kind]);
  return {
    me,
    jid,
    id,
    at,
    content: {
      kind,
      mimetype: content.mimetype,
      file_name: content.fileName ?? null,
      caption: content.caption ?? null,
      ptt: content.ptt ?? null,
      size: bytes.length,
      sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
    },
  };
}

function startControlServer(makeSocket, port) {
  const routes = {
    'POST /inject': (sock, body) => {
      const messages = Array.isArray(body.messages) ? body.messages : [body];
      sock.inject(messages.map(({ me: _, ...m }) => m), body.type ?? 'notify');
      return { ok: true, injected: messages.length };
    },
    'POST /inject-media': async (sock, body) => {
      const message = await sock.injectMedia({
        from: body.from,
        id: body.id,
        kind: body.kind,
        mimetype: body.mimetype,
        data: Buffer.from(body.data ?? '', 'base64'),
        ptt: body.ptt,
        seconds: body.seconds,
        caption: body.caption,
        fileName: body.file_name,
        pushName: body.push_name,
      });
      return { ok: true, id: message.key.id };
    },
    'GET /sent': () => ({ sent: makeSocket.sent.map(sentSummary) }),
    'POST /status': (sock, body) => {
      sock.updateStatus(body.id, body.status, body.remoteJid);
      return { ok: true };
    },
    'POST /qr': (sock, body) => {
      sock.showQr(body.qr);
      return { ok: true };
    },
    'POST /scan': async (_, body) => {
      await makeSocket.scan(body.qr, body.me);
      return { ok: true };
    },
    'POST /open': (sock) => {
      sock.open();
      return { ok: true };
    },
    'POST /close': async (sock, body) => {
      await sock.close(Number(body.code ?? 428));
      return { ok: true };
    },
    'GET /state': (sock) => ({
      connection: sock?.connection ?? null,
      sockets: makeSocket.sockets.length,
      pairing_requests: makeSocket.pairingRequests,
      logouts: makeSocket.logouts,
      qrs: Object.fromEntries(makeSocket.sockets.filter((s) => s.qr).map((s) => [s.qr, s.connection])),
    }),
  };

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake');
    const route = routes[`${req.method} ${url.pathname}`];
    let status = 200;
    let answer;
    try {
      const body = await readJson(req);
      const me = body.me ?? url.searchParams.get('me');
      const sock = makeSocket.current(me);
      if (!route) [status, answer] = [404, { error: 'not_found' }];
      else if (!sock && req.method === 'POST' && url.pathname !== '/scan') [status, answer] = [409, { error: 'no_socket' }];
      else answer = await route(sock, body);
    } catch (error) {
      [status, answer] = [400, { error: 'bad_request', message: error.message }];
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer));
  });
  server.listen(port, '127.0.0.1');
  return server;
}

function fromEnvironment(env) {
  const initialQr = env.FAKE_WA_QR || null;
  const makeSocket = createFakeSocketFactory({
    me: env.FAKE_WA_ME || undefined,
    openDelayMs: env.FAKE_WA_OPEN_DELAY_MS ? Number(env.FAKE_WA_OPEN_DELAY_MS) : 50,
    autoOpen: env.FAKE_WA_AUTO_OPEN !== '0' && !initialQr,
    linkByQr: env.FAKE_WA_LINK_BY_QR === '1',
    initialQr,
  });
  if (env.FAKE_WA_CONTROL_PORT) startControlServer(makeSocket, Number(env.FAKE_WA_CONTROL_PORT));
  return makeSocket;
}

export default fromEnvironment(process.env);
