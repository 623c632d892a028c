// JSON-lines logger with the pino-style call shape Baileys expects: logger.info(fields, msg).
import { LOG_LEVELS } from './config.js';

const LEVEL_RANK = Object.fromEntries(LOG_LEVELS.map((name, rank) => [name, rank]));

// Baileys hands us Errors, Buffers, Longs and occasionally cyclic objects; JSON.stringify would
// drop the first, bloat the second and throw on the last.
function safeReplacer() {
  const seen = new WeakSet();
  return function replace(key, value) {
    if (typeof value === 'bigint') return value.toString();
    if (value instanceof Error) {
      return { type: value.name, message: value.message, statusCode: value.output?.statusCode };
    }
    if (value && typeof value === 'object') {
      if (value.type === 'Buffer' && Array.isArray(value.data)) return `<${value.data.length} bytes>`;
      if (ArrayBuffer.isView(value)) return `<${value.byteLength} bytes>`;
      if (seen.has(value)) return '[circular]';
      seen.add(value);
    }
    return value;
  };
}

export function createLogger({ level = 'info', stream = process.stdout, bindings = {} } = {}) {
  const threshold = LEVEL_RANK[level] ?? LEVEL_RANK.info;

  function write(levelName, fieldsOrMsg, msg) {
    if (LEVEL_RANK[levelName] < threshold) return;
    const fields = typeof fieldsOrMsg === 'string' ? {} : fieldsOrMsg instanceof Error ? { err: fieldsOrMsg } : fieldsOrMsg;
    const message = typeof fieldsOrMsg === 'string' ? fieldsOrMsg : msg;
    const record = { time: new Date().toISOString(), level: levelName, ...bindings, ...fields };
    if (message !== undefined) record.msg = message;
    stream.write(`${JSON.stringify(record, safeReplacer())}\n`);
  }

  const logger = {
    level,
    child(childBindings, options = {}) {
      return createLogger({ level: options.level ?? level, stream, bindings: { ...bindings, ...childBindings } });
    },
  };
  for (const name of LOG_LEVELS.filter((l) => l !== 'silent')) {
    logger[name] = (fieldsOrMsg, msg) => write(name, fieldsOrMsg ?? {}, msg);
  }
  return logger;
}

// Baileys logs every frame and retry at info level; keep it at warn unless the operator asked
// for debug output, in which case it gets the same level as the bridge.
export function libraryLogLevel(bridgeLevel) {
  return LEVEL_RANK[bridgeLevel] < LEVEL_RANK.info ? bridgeLevel : LOG_LEVELS[Math.max(LEVEL_RANK[bridgeLevel], LEVEL_RANK.warn)];
}
