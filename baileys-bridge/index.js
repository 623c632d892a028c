// Entry point: configuration from the environment, the real Baileys socket (or the module named
// by WA_SOCKET_MODULE), signals. Everything else lives in lib/.
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import makeWASocket, { Browsers, fetchLatestBaileysVersion } from '@whiskeysockets/baileys';
import { createBridge } from './lib/bridge.js';
import { ConfigError, describeConfig, loadConfig } from './lib/config.js';
import { createLogger } from './lib/logger.js';

const VERSION_LOOKUP_TIMEOUT_MS = 5000;

function loadConfigOrExit() {
  try {
    return loadConfig(process.env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`baileys-bridge: refusing to start: ${error.message}\n`);
    process.exit(1);
  }
}

const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel });

// WhatsApp turns away clients that announce an outdated web version, so ask for the current one;
// but the lookup needs GitHub, and start-up must not depend on it: on any failure or after a few
// seconds, use the version bundled with Baileys.
async function whatsAppWebVersion() {
  const timeout = new Promise((resolve) => setTimeout(resolve, VERSION_LOOKUP_TIMEOUT_MS, null).unref());
  const latest = await Promise.race([fetchLatestBaileysVersion().catch(() => null), timeout]);
  if (latest?.isLatest) {
    logger.info({ version: latest.version.join('.') }, 'using the latest WhatsApp Web version');
    return latest.version;
  }
  logger.warn('could not look up the latest WhatsApp Web version; using the one bundled with Baileys');
  return null;
}

function baileysSocketFactory() {
  let version; // looked up once, when the first socket is made (after the HTTP server is up)
  return async (socketConfig) => {
    version ??= whatsAppWebVersion();
    const resolved = await version;
    return makeWASocket({
      ...socketConfig,
      browser: Browsers.ubuntu('Chrome'),
      ...(resolved && { version: resolved }),
    });
  };
}

// WA_SOCKET_MODULE: path to an ES module whose default export replaces makeWASocket. The Python
// test suite runs this same entry point with test/fakes/fake-socket.js this way.
async function socketFactoryFromModule(modulePath) {
  const module = await import(pathToFileURL(path.resolve(modulePath)).href);
  if (typeof module.default !== 'function') {
    throw new Error(`WA_SOCKET_MODULE ${modulePath} has no default export function`);
  }
  return module.default;
}

const socketModule = process.env.WA_SOCKET_MODULE?.trim();
const makeSocket = socketModule ? await socketFactoryFromModule(socketModule) : baileysSocketFactory();

logger.info({ config: describeConfig(config), socketModule: socketModule || 'baileys' }, 'starting baileys bridge');
for (const warning of config.retiredSettings) logger.warn(warning);
const bridge = createBridge({ makeSocket, config, logger });

// Baileys runs background work whose failures surface as unhandled rejections; one of those must
// not take the bridge (and the session) down.
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping');
  await bridge.stop();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

try {
  await bridge.start();
} catch (error) {
  logger.fatal({ err: error }, 'bridge failed to start');
  process.exit(1);
}
