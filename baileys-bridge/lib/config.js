// Configuration: built once from the environment; nothing else in the bridge reads process.env.
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export class ConfigError extends Error {}

const BRIDGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// Tunables that only tests and unusual deployments change. They are plain config fields
// (not env vars) so a test can shrink timers instead of sleeping.
export const DEFAULTS = Object.freeze({
  port: 8000,
  host: '127.0.0.1',
  // One subdirectory per instance: <authDir>/business-<id>/.
  authDir: path.join(BRIDGE_DIR, 'wa_session'),
  instances: [],
  forwardGroups: false,
  sendMinIntervalMs: 1000,
  logLevel: 'info',
  previousSharedSecret: null,
  mediaMaxBytes: 16 * 1024 * 1024,

  signatureToleranceSec: 300,
  maxBodyBytes: 64 * 1024,
  idempotencyTtlMs: 10 * 60 * 1000,
  inboundDedupeTtlMs: 10 * 60 * 1000,

  forwardMaxAttempts: 6,
  forwardBackoffBaseMs: 1000,
  forwardBackoffMaxMs: 60 * 1000,
  forwardQueueMax: 1000,
  forwardTimeoutMs: 10 * 1000,
  // An event with media can be ~22 MB of JSON; a long app outage must not queue gigabytes of them.
  forwardQueueMaxBytes: 64 * 1024 * 1024,

  // A media download that stalls is given up (the event then says download_failed).
  mediaDownloadTimeoutMs: 60 * 1000,

  reconnectBaseMs: 1000,
  reconnectMaxMs: 60 * 1000,

  // getMessage() answers WhatsApp's retry requests for our recent sends from this store.
  sentStoreMax: 1000,
  sentStoreTtlMs: 24 * 60 * 60 * 1000,
});

const LOG_LEVEL_ALIASES = { warning: 'warn', critical: 'fatal' };
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

function parsePort(name, raw) {
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`${name} must be a TCP port number, got "${raw}"`);
  }
  return port;
}

function parsePositiveInt(name, raw, fallback) {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new ConfigError(`${name} must be a non-negative integer, got "${raw}"`);
  }
  return value;
}

function parseBool(name, raw, fallback) {
  if (raw === undefined || raw === '') return fallback;
  const value = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

// The Flask app shares LOG_LEVEL and spells it the Python way (INFO, WARNING).
function parseLogLevel(raw) {
  if (raw === undefined || raw === '') return DEFAULTS.logLevel;
  const lower = raw.trim().toLowerCase();
  const level = LOG_LEVEL_ALIASES[lower] ?? lower;
  if (!LOG_LEVELS.includes(level)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  }
  return level;
}

// requestPairingCode wants digits only, country code included (9725XXXXXXXX). Null when invalid.
export function pairingDigits(raw) {
  if (typeof raw !== 'string') return null;
  const digits = raw.replace(/[\s()+-]/g, '');
  return /^\d{8,15}$/.test(digits) ? digits : null;
}

const BUSINESS_ID = /^[1-9]\d{0,15}$/;

/** A business id as it comes in a query string, a JSON body or a directory name; null when it is not one. */
export function parseBusinessId(raw) {
  if (typeof raw === 'number') return Number.isSafeInteger(raw) && raw > 0 ? raw : null;
  if (typeof raw === 'string' && BUSINESS_ID.test(raw.trim())) return Number(raw.trim());
  return null;
}

function parseInstances(raw) {
  if (raw === undefined || raw.trim() === '') return [];
  const ids = raw.split(',').map((part) => part.trim()).filter(Boolean);
  return [...new Set(ids.map((id) => {
    const parsed = parseBusinessId(id);
    if (parsed === null) throw new ConfigError(`WA_INSTANCES must be business ids separated by commas, got "${raw}"`);
    return parsed;
  }))];
}

function authDirFrom(env) {
  const raw = env.WA_AUTH_DIR?.trim() || env.WA_SESSION_DIR?.trim();
  return raw ? path.resolve(raw) : DEFAULTS.authDir;
}

// Settings of the single-account bridge that no longer mean anything: named in a warning at start.
const RETIRED = { WA_PAIRING_NUMBER: 'add the instance with {"business_id", "pairing_number"} instead' };

export function loadConfig(env) {
  const sharedSecret = env.WA_SHARED_SECRET?.trim();
  if (!sharedSecret) {
    throw new ConfigError('WA_SHARED_SECRET is required (the HMAC key shared with the Flask app)');
  }
  const appPort = env.PORT?.trim() || '5000';
  const appUrl = (env.APP_URL?.trim() || `http://127.0.0.1:${appPort}`).replace(/\/+$/, '');

  return Object.freeze({
    ...DEFAULTS,
    sharedSecret,
    // During a key rotation both keys verify, and outgoing requests carry a v1= for each.
    previousSharedSecret: env.WA_SHARED_SECRET_PREVIOUS?.trim() || null,
    port: env.WA_BAILEYS_PORT ? parsePort('WA_BAILEYS_PORT', env.WA_BAILEYS_PORT) : DEFAULTS.port,
    host: env.WA_BAILEYS_HOST?.trim() || DEFAULTS.host,
    // WA_SESSION_DIR is the variable's earlier name, still honoured so existing deployments keep their root.
    authDir: authDirFrom(env),
    instances: parseInstances(env.WA_INSTANCES),
    appUrl,
    mediaMaxBytes: Math.max(1, parsePositiveInt('WA_MEDIA_MAX_BYTES', env.WA_MEDIA_MAX_BYTES, DEFAULTS.mediaMaxBytes)),
    forwardGroups: parseBool('WA_FORWARD_GROUPS', env.WA_FORWARD_GROUPS, DEFAULTS.forwardGroups),
    sendMinIntervalMs: parsePositiveInt('WA_SEND_MIN_INTERVAL_MS', env.WA_SEND_MIN_INTERVAL_MS, DEFAULTS.sendMinIntervalMs),
    forwardMaxAttempts: Math.max(1, parsePositiveInt('WA_FORWARD_MAX_ATTEMPTS', env.WA_FORWARD_MAX_ATTEMPTS, DEFAULTS.forwardMaxAttempts)),
    logLevel: parseLogLevel(env.LOG_LEVEL),
    retiredSettings: Object.keys(RETIRED)
      .filter((name) => env[name]?.trim())
      .map((name) => `${name} is no longer read: ${RETIRED[name]}`),
  });
}

/** The body limit of POST /send: the base64 of the largest media plus room for the rest of the JSON. */
export function sendBodyLimit(config) {
  return Math.ceil(config.mediaMaxBytes / 3) * 4 + config.maxBodyBytes;
}

export function signingSecrets(config) {
  return [config.sharedSecret, config.previousSharedSecret].filter(Boolean);
}

// What the start-up log line may show: everything except the secrets.
export function describeConfig(config) {
  const { sharedSecret, previousSharedSecret, ...shown } = config;
  return { ...shown, keyRotation: Boolean(previousSharedSecret) };
}
