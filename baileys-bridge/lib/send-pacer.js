// Spaces consecutive sends to the same number by at least minIntervalMs. Bursts to one chat are
// a classic trigger for WhatsApp's rate-overlimit (429) and bans, so sends wait their turn in a
// per-destination queue instead of being rejected. Different destinations do not wait for each
// other.
export function createSendPacer({ minIntervalMs, now = Date.now }) {
  // destination → { tail: promise of the last queued send, lastStartedAt, queued }
  const lanes = new Map();

  function wait(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  return {
    /** Runs task() when the destination's turn comes; resolves or rejects with its result. */
    run(destination, task) {
      const lane = lanes.get(destination) ?? { tail: Promise.resolve(), lastStartedAt: -Infinity, queued: 0 };
      lanes.set(destination, lane);
      lane.queued += 1;

      const result = lane.tail.then(async () => {
        const waitMs = lane.lastStartedAt + minIntervalMs - now();
        if (waitMs > 0) await wait(waitMs);
        lane.lastStartedAt = now();
        return task();
      });
      // The next send waits for this one to finish, whether it worked or not.
      lane.tail = result.catch(() => {});
      lane.tail.then(() => {
        lane.queued -= 1;
        // Forget idle lanes once the spacing no longer matters, so the map stays small.
        if (lane.queued === 0) {
          setTimeout(() => {
            if (lane.queued === 0 && lanes.get(destination) === lane) lanes.delete(destination);
          }, minIntervalMs).unref();
        }
      });
      return result;
    },
  };
}
