// Idempotency keys for POST /send (the pattern the fazer-ai/baileys-api sidecar uses):
// within the TTL a repeat of a key gets the first answer and sends nothing, even while the first
// request is still waiting its turn. The caller decides which answers are kept: when the first
// try ended in "certainly not sent", a retry with the same key must be allowed to send.
import { TtlCache } from './ttl-cache.js';

export class IdempotencyConflictError extends Error {
  constructor() {
    super('idempotency_key was already used for a different message');
  }
}

const MAX_KEYS = 10000;

export function createIdempotencyStore({ ttlMs, now = Date.now }) {
  const entries = new TtlCache({ ttlMs, maxEntries: MAX_KEYS, now });

  return {
    /**
     * Runs action() once per key. fingerprint identifies the request; the same key with another
     * fingerprint throws IdempotencyConflictError. keep(result) says whether to remember result.
     */
    async run(key, fingerprint, action, keep) {
      const existing = entries.get(key);
      if (existing) {
        if (existing.fingerprint !== fingerprint) throw new IdempotencyConflictError();
        return existing.result;
      }
      const entry = { fingerprint, result: action() };
      entries.set(key, entry);
      const forget = () => {
        if (entries.get(key) === entry) entries.del(key);
      };
      try {
        const result = await entry.result;
        if (!keep(result)) forget();
        return result;
      } catch (error) {
        forget();
        throw error;
      }
    },
  };
}
