// Wires the parts together: the HTTP API → the instance manager → one instance per business
// (instance.js: connection, inbound forwarding, sending). The WhatsApp socket factory is a
// parameter: index.js passes Baileys' makeWASocket, tests pass a fake.
import { useMultiFileAuthState } from '@whiskeysockets/baileys';
import QRCode from 'qrcode';
import { pairingDigits, parseBusinessId, sendBodyLimit, signingSecrets } from './config.js';
import { createHttpServer, errorResponse, jsonResponse } from './http-server.js';
import { createInstanceManager } from './instances.js';
import { createLogger } from './logger.js';
import { verifyRequestSignature } from './signing.js';

export { WEBHOOK_PATH } from './instance.js';

const invalidBusinessId = () => errorResponse(400, 'invalid_business_id', '"business_id" must be a positive integer (the business the WhatsApp account belongs to)');
const unknownInstance = (businessId) => errorResponse(404, 'unknown_instance', `no WhatsApp instance for business ${businessId}`);

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
  const instances = createInstanceManager({
    config,
    secrets,
    makeSocket,
    authStateFactory,
    fetch,
    now,
    timers,
    logger: logger.child({ component: 'instance' }),
  });

  // The instance a request names (business_id in the JSON body or the query string), or the error answer.
  function instanceFor(raw) {
    const businessId = parseBusinessId(raw);
    if (businessId === null) return { error: invalidBusinessId() };
    const instance = instances.get(businessId);
    return instance ? { instance } : { error: unknownInstance(businessId) };
  }

  function withInstance(pick, handler) {
    return async (request) => {
      const { instance, error } = instanceFor(pick(request));
      return error ?? handler(instance, request);
    };
  }
  const fromQuery = ({ query }) => query.get('business_id') ?? undefined;
  const fromBody = ({ body }) => body.business_id;
  const fromPath = ({ params }) => params.id;

  async function qrAnswer(instance, render) {
    const { qr, state } = instance.status();
    if (!qr) {
      return errorResponse(404, 'no_qr', state === 'open' ? 'already connected' : 'no QR code yet; try again in a few seconds');
    }
    return render(qr);
  }

  function pairingNumberFrom(body) {
    if (body.pairing_number == null) return { pairingNumber: null };
    const pairingNumber = pairingDigits(body.pairing_number);
    return pairingNumber ? { pairingNumber } : { error: errorResponse(400, 'invalid_pairing_number', '"pairing_number" must be a phone number with country code') };
  }

  const routes = {
    'GET /healthz': { handler: () => jsonResponse(200, { ok: true }) },
    'GET /status': {
      handler: withInstance(fromQuery, (instance) => {
        const { business_id: _, ...status } = instance.describe();
        return jsonResponse(200, status);
      }),
    },
    'GET /qr': {
      handler: withInstance(fromQuery, (instance) =>
        qrAnswer(instance, async (qr) => ({
          status: 200,
          contentType: 'image/png',
          body: await QRCode.toBuffer(qr, { type: 'png', margin: 4, scale: 8 }),
        })),
      ),
    },
    'GET /qr.txt': {
      handler: withInstance(fromQuery, (instance) =>
        qrAnswer(instance, async (qr) => ({
          status: 200,
          contentType: 'text/plain; charset=utf-8',
          body: await QRCode.toString(qr, { type: 'terminal', small: true }),
        })),
      ),
    },
    // The QR string itself links a phone to the account, so unlike the pictures it is signed.
    'GET /qr.json': {
      signed: true,
      handler: withInstance(fromQuery, (instance) => qrAnswer(instance, async (qr) => jsonResponse(200, { qr }))),
    },
    'POST /send': {
      signed: true,
      json: true,
      maxBodyBytes: sendBodyLimit(config),
      handler: withInstance(fromBody, (instance, { body }) => instance.send(body)),
    },
    'POST /login': {
      signed: true,
      json: true,
      handler: withInstance(fromBody, (instance, { body }) => {
        const { pairingNumber, error } = pairingNumberFrom(body);
        if (error) return error;
        return jsonResponse(200, { started: instance.login(pairingNumber), state: instance.status().state });
      }),
    },
    'GET /instances': {
      signed: true,
      handler: () => jsonResponse(200, { instances: instances.list().map((instance) => instance.describe()) }),
    },
    'POST /instances': {
      signed: true,
      json: true,
      handler: async ({ body }) => {
        const businessId = parseBusinessId(body.business_id);
        if (businessId === null) return invalidBusinessId();
        const { pairingNumber, error } = pairingNumberFrom(body);
        if (error) return error;
        const { instance, created } = await instances.add(businessId, { pairingNumber });
        return jsonResponse(created ? 201 : 200, { ...instance.describe(), created });
      },
    },
    'POST /instances/:id/logout': {
      signed: true,
      handler: withInstance(fromPath, async (instance) => {
        await instance.logout();
        return jsonResponse(200, instance.describe());
      }),
    },
    'DELETE /instances/:id': {
      signed: true,
      handler: withInstance(fromPath, async (instance) => {
        await instances.remove(instance.businessId);
        return jsonResponse(200, { business_id: instance.businessId, removed: true });
      }),
    },
  };

  const server = createHttpServer({
    routes,
    maxBodyBytes: config.maxBodyBytes,
    verifySignature: (request) =>
      verifyRequestSignature({ ...request, secrets, nowSeconds: now() / 1000, toleranceSeconds: config.signatureToleranceSec }),
    logger: logger.child({ component: 'http' }),
  });

  return {
    /** Listens on config.host:config.port (0 = any free port), then starts every instance. */
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
      await instances.start();
      return { host: address, port };
    },

    async stop() {
      await instances.stop();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },

    instances,

    /** The instance of a business (tests and index.js only; the HTTP API goes through routes). */
    instance: (businessId) => instances.get(businessId),

    /** Resolves once every instance has delivered or dropped every event so far. */
    whenForwardingIdle: () => Promise.all(instances.list().map((instance) => instance.whenForwardingIdle())),
  };
}
