// The instance manager: business id → instance (instance.js), and the session directories on disk.
//
// <authDir>/business-<id>/ is the session of business <id>. At start every such directory gets
// an instance, plus every id in WA_INSTANCES (a first login for those shows a QR code). Adding is
// idempotent; removing stops the instance and deletes its directory, so it does not come back at
// the next start.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseBusinessId } from './config.js';
import { createInstance } from './instance.js';

const SESSION_DIR_NAME = /^business-([1-9]\d{0,15})$/;

export function sessionDirName(businessId) {
  return `business-${businessId}`;
}

export function createInstanceManager({ config, logger, ...instanceDeps }) {
  const instances = new Map();
  // Adds under way: a second request for the same business waits for the first one's instance
  // instead of starting a second socket on the same session.
  const adding = new Map();
  let stopped = false;

  async function discover() {
    const names = await fs.readdir(config.authDir).catch((error) => {
      if (error.code === 'ENOENT') return [];
      throw error;
    });
    const found = names.map((name) => SESSION_DIR_NAME.exec(name)?.[1]).filter(Boolean).map(parseBusinessId);
    if (names.includes('creds.json')) {
      // The single-account layout of earlier versions: its files sit in the root itself.
      logger.warn({ authDir: config.authDir }, 'a session from the single-account bridge is in WA_AUTH_DIR itself; move its files to business-<id>/ to keep it');
    }
    return [...new Set([...found, ...config.instances])].sort((a, b) => a - b);
  }

  async function add(businessId, options = {}) {
    const existing = instances.get(businessId);
    if (existing) return { instance: existing, created: false };
    if (adding.has(businessId)) return { instance: await adding.get(businessId), created: false };
    const pending = create(businessId, options);
    adding.set(businessId, pending);
    try {
      return { instance: await pending, created: true };
    } finally {
      adding.delete(businessId);
    }
  }

  async function create(businessId, { pairingNumber = null }) {
    await fs.mkdir(config.authDir, { recursive: true, mode: 0o700 });
    const instance = createInstance({
      ...instanceDeps,
      config,
      businessId,
      pairingNumber,
      sessionDir: path.join(config.authDir, sessionDirName(businessId)),
      logger,
    });
    instances.set(businessId, instance);
    logger.info({ business_id: businessId }, 'instance added');
    if (!stopped) await instance.start();
    return instance;
  }

  return {
    /** Starts an instance for every session directory and every WA_INSTANCES id. */
    async start() {
      const ids = await discover();
      logger.info({ instances: ids }, 'starting instances');
      // Side by side: one whose session is slow to read does not hold up the rest, and one that
      // fails to connect retries on its own timer.
      await Promise.all(ids.map((id) => add(id)));
      return ids;
    },

    add,
    get: (businessId) => instances.get(businessId) ?? null,
    list: () => [...instances.values()].sort((a, b) => a.businessId - b.businessId),

    /** Stops the instance, forgets it and deletes its session directory. False when unknown. */
    async remove(businessId) {
      const instance = instances.get(businessId);
      if (!instance) return false;
      instances.delete(businessId);
      // Logged out first when connected, so the phone's "linked devices" list is cleaned up too.
      if (instance.status().state === 'open') await instance.logout({ relogin: false });
      await instance.stop();
      // The path is built here from a number, never taken from a request.
      await fs.rm(instance.sessionDir, { recursive: true, force: true });
      logger.info({ business_id: businessId }, 'instance removed');
      return true;
    },

    async stop() {
      stopped = true;
      await Promise.all([...instances.values()].map((instance) => instance.stop()));
    },
  };
}
