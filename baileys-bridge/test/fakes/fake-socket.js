// A stand-in for Baileys' makeWASocket that never talks to WhatsApp.
//
// Two ways to use it:
//  - In node tests: createFakeSocketFactory(options) returns a makeSocket function; drive the
//    sockets it made through makeSocket.current() (open, showQr, close, inject, updateStatus).
//  - From outside (the Python suite): start the real bridge with
//    WA_SOCKET_MODULE=test/fakes/fake-socket.js and FAKE_WA_CONTROL_PORT=<port>; the default
//    export then serves the control API below on 127.0.0.1:<port>.
//
// Control API (JSON in, JSON out, always about the most recent socket):
//   POST /inject  a WAMessage, or {"messages": [WAMessage…], "type": "notify"|"append"}
//                 → emits messages.upsert (type defaults to "notify")
//   GET  /sent    → {"sent": [{"jid", "content", "id", "at"}…]}: what sendMessage received
//   POST /status  {"id", "status": "sent"|"delivered"|"read"|"played"|"failed"|<number>, "remoteJid"?}
//                 → emits messages.update for one of our own messages
//   POST /qr      {"qr": "<string>"} → emits connection.update {qr}
//   POST /open    → emits connection.update {connection: "open"}
//   POST /close   {"code": 401|403|408|428|440|500|515…} → closes the socket with that code
//   GET  /state   → {"connection", "sockets", "pairing_requests"}
//
// Environment for the default export:
//   FAKE_WA_CONTROL_PORT  control API port (no control API when unset)
//   FAKE_WA_ME            own number, digits only (default 972500000000)
//   FAKE_WA_OPEN_DELAY_MS delay before a new socket opens (default 50)
//   FAKE_WA_AUTO_OPEN     "0" keeps new sockets connecting until POST /open
//   FAKE_WA_QR            a QR string each new socket emits first (implies FAKE_WA_AUTO_OPEN=0)
import { EventEmitter } from 'node:events';
import crypto from 'node:crypto';
import http from 'node:http';

const STATUS_CODES = { failed: 0, pending: 1, sent: 2, delivered: 3, read: 4, played: 5 };

function disconnectError(statusCode, message = `fake disconnect ${statusCode}`) {
  return Object.assign(new Error(message), { isBoom: true, output: { statusCode } });
}

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

class FakeSocket {
  constructor(config, { meJid, openDelayMs, autoOpen, initialQr, sent, pairingRequests, behaviour }) {
    this.config = config;
    this.createdAt = Date.now();
    this.authState = config.auth;
    this.ev = new FakeEventStream();
    this.meJid = meJid;
    this.sent = sent;
    this.pairingRequests = pairingRequests;
    this.behaviour = behaviour;
    this.connection = 'connecting';
    // Like Baileys, announce "connecting" after the caller had a chance to subscribe.
    setImmediate(() => {
      if (this.connection !== 'connecting') return;
      this.ev.emit('connection.update', { connection: 'connecting' });
      if (initialQr) this.showQr(initialQr);
      else if (autoOpen) setTimeout(() => this.open(), openDelayMs);
    });
  }

  get user() {
    return this.authState?.creds?.me;
  }

  open() {
    if (this.connection === 'close') return;
    this.connection = 'open';
    if (this.authState?.creds) {
      Object.assign(this.authState.creds, { me: { id: this.meJid, name: 'Fake Business' }, registered: true });
      this.ev.emit('creds.update', { me: this.authState.creds.me, registered: true });
    }
    this.ev.emit('connection.update', { connection: 'open' });
  }

  showQr(qr) {
    this.ev.emit('connection.update', { qr });
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
    await this.end(disconnectError(401, 'Intentional Logout'));
  }

  async requestPairingCode(phoneNumber) {
    this.pairingRequests.push(phoneNumber);
    return 'FAKE1234';
  }

  inject(messages, type = 'notify') {
    const now = Math.floor(Date.now() / 1000);
    const filled = messages.map((m) => ({ messageTimestamp: now, ...m }));
    this.ev.emit('messages.upsert', { messages: filled, type });
  }

  updateStatus(id, status, remoteJid = `${this.meJid.split(':')[0]}@s.whatsapp.net`) {
    const code = typeof status === 'number' ? status : STATUS_CODES[status];
    this.ev.emit('messages.update', [{ key: { id, remoteJid, fromMe: true }, update: { status: code } }]);
  }

  async sendMessage(jid, content) {
    if (this.connection !== 'open') throw disconnectError(428, 'Connection Closed');
    const { sendDelayMs, sendError } = this.behaviour;
    if (sendDelayMs) await new Promise((resolve) => setTimeout(resolve, sendDelayMs));
    if (sendError) throw sendError;
    const id = `3EB0${crypto.randomBytes(8).toString('hex').toUpperCase()}`;
    this.sent.push({ jid, content, id, at: Date.now() });
    return {
      key: { remoteJid: jid, fromMe: true, id },
      message: { extendedTextMessage: { text: content.text } },
      messageTimestamp: Math.floor(Date.now() / 1000),
      status: STATUS_CODES.pending,
    };
  }
}

/**
 * Options: me (digits), openDelayMs, autoOpen, initialQr, sendDelayMs, sendError (thrown by
 * sendMessage). The returned makeSocket has .sockets, .sent, .pairingRequests, .current() and
 * .behaviour ({sendDelayMs, sendError}, which a test may change between sends).
 */
export function createFakeSocketFactory({
  me = '972500000000',
  openDelayMs = 10,
  autoOpen = true,
  initialQr = null,
  sendDelayMs = 0,
  sendError = null,
} = {}) {
  const sockets = [];
  const sent = [];
  const pairingRequests = [];
  const behaviour = { sendDelayMs, sendError };
  function makeSocket(config) {
    const sock = new FakeSocket(config, {
      meJid: `${me}:7@s.whatsapp.net`,
      openDelayMs,
      autoOpen,
      initialQr,
      sent,
      pairingRequests,
      behaviour,
    });
    sockets.push(sock);
    return sock;
  }
  makeSocket.behaviour = behaviour;
  makeSocket.sockets = sockets;
  makeSocket.sent = sent;
  makeSocket.pairingRequests = pairingRequests;
  makeSocket.current = () => sockets.at(-1);
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

function startControlServer(makeSocket, port) {
  const routes = {
    'POST /inject': (sock, body) => {
      const messages = Array.isArray(body.messages) ? body.messages : [body];
      sock.inject(messages, body.type ?? 'notify');
      return { ok: true, injected: messages.length };
    },
    'GET /sent': () => ({ sent: makeSocket.sent }),
    'POST /status': (sock, body) => {
      sock.updateStatus(body.id, body.status, body.remoteJid);
      return { ok: true };
    },
    'POST /qr': (sock, body) => {
      sock.showQr(body.qr);
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
    }),
  };

  const server = http.createServer(async (req, res) => {
    const route = routes[`${req.method} ${new URL(req.url, 'http://fake').pathname}`];
    let status = 200;
    let answer;
    try {
      const sock = makeSocket.current();
      if (!route) [status, answer] = [404, { error: 'not_found' }];
      else if (!sock && req.method === 'POST') [status, answer] = [409, { error: 'no_socket' }];
      else answer = await route(sock, await readJson(req));
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
    initialQr,
  });
  if (env.FAKE_WA_CONTROL_PORT) startControlServer(makeSocket, Number(env.FAKE_WA_CONTROL_PORT));
  return makeSocket;
}

export default fromEnvironment(process.env);
