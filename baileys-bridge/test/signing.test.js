import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { signatureHeader, verifySignature } from '../lib/signing.js';

// Computed with Python's hmac/hashlib; the Flask side tests against the same file.
const vector = JSON.parse(fs.readFileSync(new URL('./vectors/signature.json', import.meta.url), 'utf8'));
const body = Buffer.from(vector.body, 'utf8');

function verify(header, { rawBody = body, secrets = [vector.secret], nowSeconds = vector.timestamp } = {}) {
  return verifySignature({ header, rawBody, secrets, nowSeconds, toleranceSeconds: 300 });
}

test('signing reproduces the shared vector', () => {
  assert.equal(signatureHeader([vector.secret], body, vector.timestamp), vector.header);
  assert.equal(signatureHeader([vector.secret], vector.body, vector.timestamp), vector.header, 'string and bytes sign alike');
  assert.equal(signatureHeader([vector.secret, vector.previous_secret], body, vector.timestamp), vector.rotation_header);
  assert.equal(signatureHeader([vector.secret], Buffer.alloc(0), vector.timestamp), vector.empty_body_header);
});

test('the shared vector verifies', () => {
  assert.deepEqual(verify(vector.header), { ok: true });
  assert.deepEqual(verify(vector.empty_body_header, { rawBody: Buffer.alloc(0) }), { ok: true });
});

test('any matching v1 passes, under either key during a rotation', () => {
  assert.deepEqual(verify(vector.rotation_header, { secrets: [vector.previous_secret] }), { ok: true });
  assert.deepEqual(verify(vector.header, { secrets: ['new-key', vector.secret] }), { ok: true });
  const [t, v1] = vector.header.split(',');
  assert.deepEqual(verify(`${t},v1=${'0'.repeat(64)},${v1}`), { ok: true });
  assert.deepEqual(verify(`${t}, v0=abc, ${v1.toUpperCase().replace('V1', 'v1')}`), { ok: true }, 'spaces, unknown schemes and hex case are tolerated');
});

test('timestamps more than 300 s away either way are stale', () => {
  assert.deepEqual(verify(vector.header, { nowSeconds: vector.timestamp + 300 }), { ok: true });
  assert.deepEqual(verify(vector.header, { nowSeconds: vector.timestamp - 300 }), { ok: true });
  assert.deepEqual(verify(vector.header, { nowSeconds: vector.timestamp + 301 }), { ok: false, reason: 'stale' });
  assert.deepEqual(verify(vector.header, { nowSeconds: vector.timestamp - 301 }), { ok: false, reason: 'stale' });
});

test('bad signatures are rejected', () => {
  assert.equal(verify(undefined).reason, 'missing');
  assert.equal(verify('').reason, 'missing');
  assert.equal(verify('v1=abc').reason, 'malformed');
  assert.equal(verify(`t=${vector.timestamp}`).reason, 'malformed');
  assert.equal(verify(`t=${vector.timestamp},v1=deadbeef`).reason, 'malformed', 'short digest never reaches timingSafeEqual');
  assert.equal(verify(`t=soon,${vector.header.split(',')[1]}`).reason, 'malformed');
  assert.equal(verify(vector.header, { secrets: ['wrong'] }).reason, 'mismatch');
  assert.equal(verify(vector.header, { rawBody: Buffer.from(`${vector.body} `) }).reason, 'mismatch');
  const otherTime = vector.header.replace(`t=${vector.timestamp}`, `t=${vector.timestamp + 1}`);
  assert.equal(verify(otherTime).reason, 'mismatch', 'the timestamp is part of what is signed');
});
