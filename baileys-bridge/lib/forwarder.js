// Delivers bridge → app events, one signed POST each, in order.
//
// - 2xx: delivered. 4xx: the app refused this payload for good; drop it, no retry.
// - 5xx, timeout or connection error: retry with exponential backoff, then drop after
//   maxAttempts with one log line.
// - The queue is bounded, in events and in bytes (an event with media carries the file): during a
//   long app outage the oldest events are dropped (and logged) rather than letting memory grow
//   without limit.
// Each attempt is signed afresh, so a retry after minutes still falls inside the app's
// 300-second timestamp window.
import { backoffDelay } from './backoff.js';
import { SIGNATURE_HEADER, signatureHeader } from './signing.js';

export function createForwarder({
  url,
  secrets,
  fetch = globalThis.fetch,
  now = Date.now,
  logger,
  maxAttempts,
  backoffBaseMs,
  backoffMaxMs,
  queueMax,
  queueMaxBytes = Infinity,
  timeoutMs,
}) {
  const queue = []; // { payload, body }: serialised once, signed afresh per attempt
  let queuedBytes = 0;
  let running = false;
  let stopped = false;
  let wakeRetryWait = null;
  let idleWaiters = [];

  function notifyIdle() {
    for (const resolve of idleWaiters) resolve();
    idleWaiters = [];
  }

  function retryWait(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wakeRetryWait = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      wakeRetryWait = null;
    });
  }

  // One attempt. Returns 'delivered', 'rejected' (4xx: do not retry) or 'retry'.
  async function attempt(body) {
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [SIGNATURE_HEADER]: signatureHeader(secrets, body, now() / 1000),
        },
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
      // Drain the body so the keep-alive connection is reused.
      await response.arrayBuffer().catch(() => {});
      if (response.ok) return { outcome: 'delivered', status: response.status };
      if (response.status >= 400 && response.status < 500) return { outcome: 'rejected', status: response.status };
      return { outcome: 'retry', status: response.status };
    } catch (error) {
      return { outcome: 'retry', error: error.cause?.code ?? error.name };
    }
  }

  async function deliver({ payload, body }) {
    const about = { event: payload.event, id: payload.id, business_id: payload.business_id };
    for (let n = 1; n <= maxAttempts && !stopped; n += 1) {
      const result = await attempt(body);
      if (result.outcome === 'delivered') {
        logger.debug({ ...about, attempts: n }, 'forwarded');
        return;
      }
      if (result.outcome === 'rejected') {
        logger.warn({ ...about, status: result.status }, 'app rejected event; not retrying');
        return;
      }
      if (n === maxAttempts) {
        logger.error({ ...about, attempts: n, status: result.status, error: result.error }, 'forwarding failed; event dropped');
        return;
      }
      const delayMs = backoffDelay(n, backoffBaseMs, backoffMaxMs);
      logger.debug({ ...about, attempt: n, status: result.status, error: result.error, retryInMs: delayMs }, 'forward attempt failed');
      await retryWait(delayMs);
    }
  }

  async function drainQueue() {
    running = true;
    while (queue.length > 0 && !stopped) {
      const entry = queue.shift();
      try {
        await deliver(entry);
      } finally {
        queuedBytes = Math.max(0, queuedBytes - entry.body.length); // stop() may have zeroed it
      }
    }
    running = false;
    notifyIdle();
  }

  return {
    enqueue(payload) {
      if (stopped) return;
      const body = JSON.stringify(payload);
      while (queue.length > 0 && (queue.length >= queueMax || queuedBytes + body.length > queueMaxBytes)) {
        const dropped = queue.shift();
        queuedBytes -= dropped.body.length;
        logger.warn({ event: dropped.payload.event, id: dropped.payload.id, queueMax, queueMaxBytes }, 'forward queue full; dropped oldest event');
      }
      queue.push({ payload, body });
      queuedBytes += body.length;
      if (!running) drainQueue();
    },

    /** Resolves once everything queued so far has been delivered or dropped. */
    whenIdle() {
      if (!running && queue.length === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(resolve));
    },

    /** Stops delivering; events still queued are dropped with the process. */
    stop() {
      stopped = true;
      wakeRetryWait?.();
      if (queue.length > 0) logger.warn({ dropped: queue.length }, 'forwarder stopped with events undelivered');
      queue.length = 0;
      queuedBytes = 0;
    },
  };
}
