import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, DEFAULTS, describeConfig, loadConfig, signingSecrets } from '../lib/config.js';

test('WA_SHARED_SECRET is required', () => {
  assert.throws(() => loadConfig({}), ConfigError);
  assert.throws(() => loadConfig({ WA_SHARED_SECRET: '   ' }), /WA_SHARED_SECRET is required/);
});

test('defaults', () => {
  const config = loadConfig({ WA_SHARED_SECRET: 's' });
  assert.equal(config.port, 8000);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.appUrl, 'http://127.0.0.1:5000');
  assert.equal(config.authDir, DEFAULTS.authDir);
  assert.equal(path.basename(config.authDir), 'wa_session');
  assert.deepEqual(config.instances, []);
  assert.equal(config.mediaMaxBytes, 16 * 1024 * 1024);
  assert.equal(config.forwardGroups, false);
  assert.equal(config.sendMinIntervalMs, 1000);
  assert.equal(config.forwardMaxAttempts, 6);
  assert.equal(config.logLevel, 'info');
  assert.deepEqual(signingSecrets(config), ['s']);
});

test('environment overrides', () => {
  const config = loadConfig({
    WA_SHARED_SECRET: 'new',
    WA_SHARED_SECRET_PREVIOUS: 'old',
    WA_BAILEYS_PORT: '8100',
    WA_BAILEYS_HOST: '0.0.0.0',
    WA_AUTH_DIR: 'relative/session',
    WA_INSTANCES: '7, 12,7',
    WA_MEDIA_MAX_BYTES: '1048576',
    PORT: '5050',
    WA_FORWARD_GROUPS: 'true',
    WA_SEND_MIN_INTERVAL_MS: '250',
    WA_FORWARD_MAX_ATTEMPTS: '3',
    LOG_LEVEL: 'WARNING',
  });
  assert.equal(config.port, 8100);
  assert.equal(config.host, '0.0.0.0');
  assert.equal(config.authDir, path.resolve('relative/session'));
  assert.deepEqual(config.instances, [7, 12]);
  assert.equal(config.mediaMaxBytes, 1048576);
  assert.equal(loadConfig({ WA_SHARED_SECRET: 's', WA_SESSION_DIR: '/srv/wa' }).authDir, '/srv/wa', 'the earlier name still works');
  assert.equal(config.appUrl, 'http://127.0.0.1:5050', 'follows the app PORT');
  assert.equal(config.forwardGroups, true);
  assert.equal(config.sendMinIntervalMs, 250);
  assert.equal(config.forwardMaxAttempts, 3);
  assert.equal(config.logLevel, 'warn', 'Python spellings are understood');
  assert.deepEqual(signingSecrets(config), ['new', 'old']);
  assert.equal(loadConfig({ WA_SHARED_SECRET: 's', APP_URL: 'http://app:5000/' }).appUrl, 'http://app:5000');
});

test('a setting of the single-account bridge is named, not silently ignored', () => {
  assert.deepEqual(loadConfig({ WA_SHARED_SECRET: 's' }).retiredSettings, []);
  const [warning] = loadConfig({ WA_SHARED_SECRET: 's', WA_PAIRING_NUMBER: '972501112222' }).retiredSettings;
  assert.match(warning, /^WA_PAIRING_NUMBER is no longer read: add the instance with .*pairing_number/);
});

test('bad values are configuration errors', () => {
  for (const [name, value] of [
    ['WA_BAILEYS_PORT', 'eighty'],
    ['WA_BAILEYS_PORT', '70000'],
    ['WA_FORWARD_GROUPS', 'maybe'],
    ['WA_SEND_MIN_INTERVAL_MS', '-1'],
    ['WA_INSTANCES', '1,abc'],
    ['WA_INSTANCES', '0'],
    ['WA_MEDIA_MAX_BYTES', 'big'],
    ['LOG_LEVEL', 'loud'],
  ]) {
    assert.throws(() => loadConfig({ WA_SHARED_SECRET: 's', [name]: value }), ConfigError, `${name}=${value}`);
  }
});

test('the loggable description has no secrets', () => {
  const shown = JSON.stringify(describeConfig(loadConfig({ WA_SHARED_SECRET: 'top-secret', WA_SHARED_SECRET_PREVIOUS: 'old-secret' })));
  assert.ok(!shown.includes('top-secret'));
  assert.ok(!shown.includes('old-secret'));
  assert.match(shown, /"keyRotation":true/);
});
