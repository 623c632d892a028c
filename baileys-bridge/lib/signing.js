// X-Bridge-Signature (README.md, "Signatures"), the same both ways between the app and the bridge:
//   X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]
// Several v1= values are allowed so that a key can be rotated without downtime.
import crypto from 'node:crypto';

export const SIGNATURE_HEADER = 'x-bridge-signature';

const HEX_SHA256 = /^[0-9a-f]{64}$/;

function digest(secret, timestamp, rawBody) {
  return crypto
    .createHmac('sha256', secret)
    .update(`${timestamp}.`)
    .update(rawBody)
    .digest();
}

export function signatureHeader(secrets, rawBody, nowSeconds) {
  const timestamp = Math.floor(nowSeconds);
  const v1s = secrets.map((secret) => `v1=${digest(secret, timestamp, rawBody).toString('hex')}`);
  return [`t=${timestamp}`, ...v1s].join(',');
}

function parseHeader(header) {
  let timestamp = null;
  const candidates = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    // Unknown schemes (v0=, v2=…) are ignored, as Stripe does, so the header can evolve.
    if (name === 'v1' && HEX_SHA256.test(value.toLowerCase())) candidates.push(Buffer.from(value, 'hex'));
  }
  return { timestamp, candidates };
}

/**
 * Checks a signature over the raw body bytes, before anything parses them.
 * Returns { ok: true } or { ok: false, reason } with reason one of
 * missing | malformed | stale | mismatch (for logs; callers answer 401 to all of them).
 */
export function verifySignature({ header, rawBody, secrets, nowSeconds, toleranceSeconds }) {
  if (!header) return { ok: false, reason: 'missing' };
  const { timestamp, candidates } = parseHeader(header);
  if (timestamp === null || candidates.length === 0) return { ok: false, reason: 'malformed' };
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return { ok: false, reason: 'stale' };

  const expected = secrets.map((secret) => digest(secret, timestamp, rawBody));
  // Compare every pair without stopping early, so timing says nothing about which one matched.
  let matched = false;
  for (const candidate of candidates) {
    for (const wanted of expected) {
      if (candidate.length === wanted.length && crypto.timingSafeEqual(candidate, wanted)) matched = true;
    }
  }
  return matched ? { ok: true } : { ok: false, reason: 'mismatch' };
}
