import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from '../lib/backoff.js';
import { libraryLogLevel } from '../lib/logger.js';
import { TtlCache } from '../lib/ttl-cache.js';
import { memoryLogger } from './helpers.js';

test('TtlCache expires entries and keeps to its size cap', () => {
  let clock = 0;
  const cache = new TtlCache({ ttlMs: 100, maxEntries: 3, now: () => clock });
  cache.set('a', 1);
  clock = 50;
  cache.set('b', 2);
  assert.equal(cache.get('a'), 1);
  clock = 100;
  assert.equal(cache.get('a'), undefined, 'expired at ttl');
  assert.equal(cache.get('b'), 2);
  for (const key of ['c', 'd', 'e']) cache.set(key, key);
  assert.equal(cache.size, 3);
  assert.equal(cache.has('b'), false, 'the oldest entry made room');
  cache.set('c', 'again'); // re-setting refreshes the expiry
  clock = 180;
  assert.equal(cache.get('c'), 'again');
  assert.equal(cache.get('d'), 'd');
  cache.del('d');
  assert.equal(cache.has('d'), false);
  cache.flushAll();
  assert.equal(cache.size, 0);
});

test('backoff doubles up to the cap', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, 1000, 60000)), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
});

test('logger writes one JSON object per line, pino call shape', () => {
  const log = memoryLogger('info');
  const cyclic = { name: 'loop' };
  cyclic.self = cyclic;
  log.logger.debug('hidden');
  log.logger.info('plain message');
  log.logger.child({ component: 'x' }).warn({ err: Object.assign(new Error('boom'), { output: { statusCode: 428 } }), big: 10n, cyclic }, 'with fields');
  log.logger.error(new Error('bare error'));
  assert.equal(log.lines.length, 3);
  assert.ok(log.lines.every((line) => line.endsWith('\n') && !line.slice(0, -1).includes('\n')));
  const [plain, withFields, bare] = log.records();
  assert.equal(plain.msg, 'plain message');
  assert.equal(plain.level, 'info');
  assert.equal(withFields.component, 'x');
  assert.deepEqual(withFields.err, { type: 'Error', message: 'boom', statusCode: 428 });
  assert.equal(withFields.big, '10');
  assert.equal(withFields.cyclic.self, '[circular]');
  assert.equal(bare.err.message, 'bare error');
});

test('Baileys logs at warn unless the bridge is debugging', () => {
  assert.equal(libraryLogLevel('info'), 'warn');
  assert.equal(libraryLogLevel('error'), 'error');
  assert.equal(libraryLogLevel('debug'), 'debug');
  assert.equal(libraryLogLevel('silent'), 'silent');
});
