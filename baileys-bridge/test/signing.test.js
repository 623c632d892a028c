import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { requestSignatureHeader, signatureHeader, verifyRequestSignature, verifySignature } from '../lib/signing.js';

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
});

test('the shared vector verifies', () => {
  assert.deepEqual(verify(vector.header), { ok: true });
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

// ---- v2: requests the app makes to the bridge, bound to their method and target ----

const [qrRequest, listRequest, sendRequest, logoutRequest, deleteRequest] = vector.requests;

function verifyRequest(header, request, { secrets = [vector.secret], nowSeconds = vector.timestamp } = {}) {
  const { method, target, body: rawBody = '' } = request;
  return verifyRequestSignature({ header, method, target, rawBody: Buffer.from(rawBody, 'utf8'), secrets, nowSeconds, toleranceSeconds: 300 });
}

test('request signing reproduces the shared vectors, and each verifies', () => {
  for (const request of vector.requests) {
    const rawBody = Buffer.from(request.body, 'utf8');
    assert.equal(requestSignatureHeader([vector.secret], { ...request, rawBody }, vector.timestamp), request.header, `${request.method} ${request.target}`);
    assert.equal(requestSignatureHeader([vector.secret], { ...request, method: request.method.toLowerCase(), rawBody: request.body }, vector.timestamp), request.header, 'method case and string body sign alike');
    assert.deepEqual(verifyRequest(request.header, request), { ok: true });
  }
  const rotating = requestSignatureHeader([vector.secret, vector.previous_secret], { ...sendRequest, rawBody: sendRequest.body }, vector.timestamp);
  assert.equal(rotating, sendRequest.rotation_header);
  assert.deepEqual(verifyRequest(sendRequest.rotation_header, sendRequest, { secrets: [vector.previous_secret] }), { ok: true });
  assert.deepEqual(verifyRequest(sendRequest.header, sendRequest, { secrets: ['new-key', vector.secret] }), { ok: true });
});

test("one business's signed QR request does not verify for another business", () => {
  for (const target of ['/qr.json?business_id=8', '/qr.json?business_id=70', '/qr.json?business_id=7&business_id=8', '/qr.json?business_id=07', '/qr.json']) {
    assert.deepEqual(verifyRequest(qrRequest.header, { ...qrRequest, target }), { ok: false, reason: 'mismatch' }, target);
  }
  assert.deepEqual(verifyRequest(qrRequest.header, { ...qrRequest, target: '/status?business_id=7' }), { ok: false, reason: 'mismatch' }, 'nor on another path');
});

test('a signature for one method does not verify for another', () => {
  assert.deepEqual(verifyRequest(qrRequest.header, { ...qrRequest, method: 'DELETE' }), { ok: false, reason: 'mismatch' });
  assert.deepEqual(verifyRequest(listRequest.header, { ...deleteRequest, target: '/instances' }), { ok: false, reason: 'mismatch' });
  assert.deepEqual(verifyRequest(logoutRequest.header, deleteRequest), { ok: false, reason: 'mismatch' });
  assert.deepEqual(verifyRequest(deleteRequest.header, { ...deleteRequest, target: '/instances/8' }), { ok: false, reason: 'mismatch' });
  assert.deepEqual(verifyRequest(sendRequest.header, { ...sendRequest, body: `${sendRequest.body} ` }), { ok: false, reason: 'mismatch' });
});

test('the two schemes never stand in for each other', () => {
  // An event's v1 is refused on a request, and a request's v2 on an event, relabelled or not.
  assert.deepEqual(verifyRequest(vector.header, { method: 'POST', target: '/send', body: vector.body }), { ok: false, reason: 'wrong_scheme' });
  const relabelled = vector.header.replace('v1=', 'v2=');
  assert.deepEqual(verifyRequest(relabelled, { method: 'POST', target: '/send', body: vector.body }), { ok: false, reason: 'mismatch' });
  assert.deepEqual(verify(sendRequest.header, { rawBody: Buffer.from(sendRequest.body) }), { ok: false, reason: 'wrong_scheme' });
  assert.deepEqual(verify(sendRequest.header.replace('v2=', 'v1='), { rawBody: Buffer.from(sendRequest.body) }), { ok: false, reason: 'mismatch' });
});

test('bad request signatures and requests are rejected', () => {
  assert.equal(verifyRequest(undefined, qrRequest).reason, 'missing');
  assert.equal(verifyRequest(`t=${vector.timestamp}`, qrRequest).reason, 'malformed');
  assert.equal(verifyRequest(`t=${vector.timestamp},v2=deadbeef`, qrRequest).reason, 'malformed');
  assert.equal(verifyRequest(qrRequest.header, { ...qrRequest, target: '/qr.json?business_id=7\nx' }).reason, 'malformed', 'no line feed in a target');
  assert.equal(verifyRequest(qrRequest.header, { ...qrRequest, target: '' }).reason, 'malformed');
  assert.equal(verifyRequest(qrRequest.header, qrRequest, { nowSeconds: vector.timestamp + 301 }).reason, 'stale');
  assert.equal(verifyRequest(qrRequest.header, qrRequest, { secrets: ['wrong'] }).reason, 'mismatch');
  const otherTime = qrRequest.header.replace(`t=${vector.timestamp}`, `t=${vector.timestamp + 1}`);
  assert.equal(verifyRequest(otherTime, qrRequest).reason, 'mismatch', 'the timestamp is part of what is signed');
  assert.throws(() => requestSignatureHeader([vector.secret], { method: 'GET', target: '/a b' }, vector.timestamp));
});
