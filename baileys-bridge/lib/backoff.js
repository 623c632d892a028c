// Exponential backoff shared by reconnects and webhook retries: base, 2×base, 4×base… capped.
// No jitter: one bridge talks to one app and one WhatsApp account, so there is no herd to spread.
export function backoffDelay(attempt, baseMs, maxMs) {
  return Math.min(maxMs, baseMs * 2 ** (attempt - 1));
}
