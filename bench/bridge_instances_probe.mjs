// Memory of N bridge instances in one process, after a forced garbage collection (run by
// bench/bench_bridge_instances.py): node --expose-gc bench/bridge_instances_probe.mjs <N> <sends>
// Builds the bridge as index.js does (createBridge), with the fake WhatsApp socket, N instances,
// every one connected; each sends and receives <sends> messages; then prints one JSON line with
// process.memoryUsage() after gc().
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createBridge } from '../baileys-bridge/lib/bridge.js';
import { loadConfig } from '../baileys-bridge/lib/config.js';
import { createLogger } from '../baileys-bridge/lib/logger.js';
import { requestSignatureHeader } from '../baileys-bridge/lib/signing.js';
import { createFakeSocketFactory } from '../baileys-bridge/test/fakes/fake-socket.js';

const [count, sends] = [Number(process.argv[2] ?? 1), Number(process.argv[3] ?? 5)];
const SECRET = 'bench-secret';
let received = 0;
const sink = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    received += 1;
    res.writeHead(204).end();
  });
});
await new Promise((resolve) => sink.listen(0, '127.0.0.1', resolve));

const authDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-probe-'));
const config = {
  ...loadConfig({ WA_SHARED_SECRET: SECRET, LOG_LEVEL: 'silent' }),
  port: 0,
  authDir,
  instances: Array.from({ length: count }, (_, i) => i + 1),
  appUrl: `http://127.0.0.1:${sink.address().port}`,
  sendMinIntervalMs: 0,
};
const makeSocket = createFakeSocketFactory({ openDelayMs: 1 });
const bridge = createBridge({ makeSocket, config, logger: createLogger({ level: 'silent' }) });
const { port } = await bridge.start();
const base = `http://127.0.0.1:${port}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
while (!bridge.instances.list().every((i) => i.status().state === 'open')) await sleep(5);

for (const instance of bridge.instances.list()) {
  for (let n = 0; n < sends; n += 1) {
    const raw = JSON.stringify({ business_id: instance.businessId, to: '+972501234567', text: `bench ${n}`, idempotency_key: `k${n}` });
    const res = await fetch(`${base}/send`, { method: 'POST', body: raw, headers: { 'x-bridge-signature': requestSignatureHeader([SECRET], { method: 'POST', target: '/send', rawBody: raw }, Date.now() / 1000) } });
    if (res.status !== 200) throw new Error(`send answered ${res.status}`);
  }
}
for (const sock of makeSocket.sockets) {
  sock.inject(Array.from({ length: sends }, (_, n) => ({ key: { remoteJid: '972501234567@s.whatsapp.net', fromMe: false, id: `IN${n}` }, message: { conversation: 'hi' } })));
}
await bridge.whenForwardingIdle();

for (let i = 0; i < 3; i += 1) {
  global.gc();
  await sleep(50);
}
const memory = process.memoryUsage();
console.log(JSON.stringify({ instances: count, events: received, rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external, arrayBuffers: memory.arrayBuffers }));
await bridge.stop();
await makeSocket.close();
sink.close();
await fs.rm(authDir, { recursive: true, force: true });
