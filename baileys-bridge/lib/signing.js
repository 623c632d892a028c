// X-Bridge-Signature (README.md, "Signatures"). Two schemes share the header:
//   requests the app makes to the bridge (checked here):
//     t=<unix seconds>,v2=<hex HMAC-SHA256(secret, "<t>\n<METHOD>\n<path?query>\n<raw body>")>[,v2=…]
//   events the bridge posts to the app (signed here):
//     t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]
// v2 binds a signature to its method and target, so a signed GET /qr.json?business_id=1 can't be
// replayed for another business or as a DELETE. Several values are allowed so that a key can be
// rotated without downtime.
import crypto from 'node:crypto';

export const SIGNATURE_HEADER = 'x-bridge-signature';
export const EVENT_SCHEME = 'v1';
export const REQUEST_SCHEME = 'v2';

const HEX_SHA256 = /^[0-9a-f]{64}$/;
// A request line's method and target: printable ASCII without spaces (RFC 9112), so no LF either,
// and the v2 message splits one way only.
const REQUEST_TOKEN = /^[\x21-\x7e]+$/;

function eventDigest(secret, timestamp, rawBody) {
  return crypto.createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest();
}

function requestDigest(secret, timestamp, method, target, rawBody) {
  return crypto
    .createHmac('sha256', secret)
    .update(`${timestamp}\n${method.toUpperCase()}\n${target}\n`, 'latin1')
    .update(rawBody)
    .digest();
}

/** The v1 header for an event to the app (signed over the timestamp and body). */
export function signatureHeader(secrets, rawBody, nowSeconds) {
  const timestamp = Math.floor(nowSeconds);
  const v1s = secrets.map((secret) => `${EVENT_SCHEME}=${eventDigest(secret, timestamp, rawBody).toString('hex')}`);
  return [`t=${timestamp}`, ...v1s].join(',');
}

/** The v2 header for a request to the bridge; target is the path and query exactly as sent. */
export function requestSignatureHeader(secrets, { method, target, rawBody = '' }, nowSeconds) {
  if (!REQUEST_TOKEN.test(method) || !REQUEST_TOKEN.test(target)) throw new Error('method and target are printable ASCII without spaces');
  const timestamp = Math.floor(nowSeconds);
  const v2s = secrets.map((secret) => `${REQUEST_SCHEME}=${requestDigest(secret, timestamp, method, target, rawBody).toString('hex')}`);
  return [`t=${timestamp}`, ...v2s].join(',');
}

function parseHeader(header, scheme) {
  let timestamp = null;
  const candidates = [];
  let otherScheme = false;
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    // Unknown schemes (v0=, v3=…) are ignored, as Stripe does, so the header can evolve.
    if (name === scheme && HEX_SHA256.test(value.toLowerCase())) candidates.push(Buffer.from(value, 'hex'));
    else if (name !== scheme && (name === EVENT_SCHEME || name === REQUEST_SCHEME)) otherScheme = true;
  }
  return { timestamp, candidates, otherScheme };
}

function check({ header, scheme, digest, secrets, nowSeconds, toleranceSeconds }) {
  if (!header) return { ok: false, reason: 'missing' };
  const { timestamp, candidates, otherScheme } = parseHeader(header, scheme);
  // Only the other direction's scheme: most likely one side runs a release from before v2.
  if (timestamp !== null && candidates.length === 0 && otherScheme) return { ok: false, reason: 'wrong_scheme' };
  if (timestamp === null || candidates.length === 0) return { ok: false, reason: 'malformed' };
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return { ok: false, reason: 'stale' };

  const expected = secrets.map((secret) => digest(secret, timestamp));
  // Compare every pair without stopping early, so timing says nothing about which one matched.
  let matched = false;
  for (const candidate of candidates) {
    for (const wanted of expected) {
      if (candidate.length === wanted.length && crypto.timingSafeEqual(candidate, wanted)) matched = true;
    }
  }
  return matched ? { ok: true } : { ok: false, reason: 'mismatch' };
}

/**
 * Checks an event's v1 signature over the raw body bytes, before anything parses them (the app's
 * side of it; the bridge uses it in its tests).
 * Returns { ok: true } or { ok: false, reason } with reason one of
 * missing | malformed | wrong_scheme | stale | mismatch (for logs; callers answer 401 to all of them).
 */
export function verifySignature({ header, rawBody, secrets, nowSeconds, toleranceSeconds }) {
  const digest = (secret, timestamp) => eventDigest(secret, timestamp, rawBody);
  return check({ header, scheme: EVENT_SCHEME, digest, secrets, nowSeconds, toleranceSeconds });
}

/**
 * Checks a request's v2 signature: over its method, its target as received (req.url: path and
 * query, byte for byte) and its raw body, before anything parses them. Same answers as
 * verifySignature.
 */
export function verifyRequestSignature({ header, method, target, rawBody, secrets, nowSeconds, toleranceSeconds }) {
  if (!header) return { ok: false, reason: 'missing' };
  if (!REQUEST_TOKEN.test(method ?? '') || !REQUEST_TOKEN.test(target ?? '')) return { ok: false, reason: 'malformed' };
  const digest = (secret, timestamp) => requestDigest(secret, timestamp, method, target, rawBody);
  return check({ header, scheme: REQUEST_SCHEME, digest, secrets, nowSeconds, toleranceSeconds });
}
