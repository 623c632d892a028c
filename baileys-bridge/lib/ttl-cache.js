// A small Map-based cache with a time-to-live and a size cap. It also satisfies Baileys'
// CacheStore interface (get/set/del/flushAll), so it doubles as msgRetryCounterCache.
//
// All entries share one TTL, so the Map's insertion order is also expiry order: expired entries
// are always at the front, and pruning only ever looks at the front.
export class TtlCache {
  constructor({ ttlMs, maxEntries, now = Date.now }) {
    this.ttlMs = ttlMs;
    this.maxEntries = maxEntries;
    this.now = now;
    this.entries = new Map();
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  has(key) {
    return this.get(key) !== undefined;
  }

  set(key, value) {
    // Re-inserting moves the key to the back, keeping insertion order equal to expiry order.
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt: this.now() + this.ttlMs });
    this.prune();
  }

  del(key) {
    this.entries.delete(key);
  }

  flushAll() {
    this.entries.clear();
  }

  get size() {
    this.prune();
    return this.entries.size;
  }

  prune() {
    const now = this.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt > now && this.entries.size <= this.maxEntries) break;
      this.entries.delete(key);
    }
  }
}
