import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { startFakeApp, startTestBridge, waitFor, waitForOpen } from './helpers.js';

const CUSTOMER = '972501234567@s.whatsapp.net';

function textMessage(id, text, key = {}) {
  return { key: { remoteJid: CUSTOMER, fromMe: false, id, ...key }, pushName: 'דנה', message: { conversation: text } };
}

describe('inbound events reach the app', () => {
  let app;
  let t;
  let sock;
  before(async () => {
    app = await startFakeApp();
    t = await startTestBridge({ app });
    await waitForOpen(t.bridge);
    sock = t.makeSocket.current();
  });
  beforeEach(async () => {
    await t.bridge.whenForwardingIdle();
    app.requests.length = 0;
  });
  after(async () => {
    await t.stop();
    await app.close();
  });

  test('a text message becomes one "message" event with the contract fields', async () => {
    sock.inject([textMessage('IN-1', 'שלום')]);
    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.deepEqual(Object.keys(event).sort(), ['business_id', 'chat', 'event', 'from', 'id', 'lid', 'push_name', 'text', 'timestamp', 'to']);
    assert.equal(event.id, 'IN-1');
    assert.equal(event.from, '+972501234567');
    assert.equal(event.to, '+972500000000');
    assert.equal(event.text, 'שלום');
    assert.ok(Number.isInteger(event.timestamp));
  });

  test('duplicates of a key.id in the same chat are forwarded once', async () => {
    sock.inject([textMessage('IN-2', 'once'), textMessage('IN-2', 'once')]);
    sock.inject([textMessage('IN-2', 'once')]);
    // The same id in another chat is another message.
    sock.inject([textMessage('IN-2', 'other chat', { remoteJid: '972507654321@s.whatsapp.net' })]);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('message').map((e) => [e.id, e.chat]), [
      ['IN-2', CUSTOMER],
      ['IN-2', '972507654321@s.whatsapp.net'],
    ]);
  });

  test('LID senders: phone from remoteJidAlt when known, null otherwise', async () => {
    sock.inject([
      textMessage('IN-3', 'with alt', { remoteJid: '140913951141911@lid', remoteJidAlt: CUSTOMER }),
      textMessage('IN-4', 'lid only', { remoteJid: '140913951141912@lid' }),
    ]);
    await t.bridge.whenForwardingIdle();
    const [withAlt, lidOnly] = app.events('message');
    assert.deepEqual([withAlt.from, withAlt.lid, withAlt.chat], ['+972501234567', '140913951141911@lid', '140913951141911@lid']);
    assert.deepEqual([lidOnly.from, lidOnly.lid], [null, '140913951141912@lid']);
  });

  test('own messages, status broadcasts, groups and history appends are not forwarded', async () => {
    sock.inject([
      textMessage('IN-5', 'mine', { fromMe: true }),
      textMessage('IN-6', 'story', { remoteJid: 'status@broadcast', participant: CUSTOMER }),
      textMessage('IN-7', 'group', { remoteJid: '120363025246125486@g.us', participant: CUSTOMER }),
    ]);
    sock.inject([textMessage('IN-8', 'old history')], 'append');
    sock.inject([{ key: { remoteJid: CUSTOMER, id: 'IN-9' }, message: { reactionMessage: { text: '👍' } } }]);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('message'), []);
  });

  test('a message that failed to decrypt is forwarded when it arrives again readable', async () => {
    sock.inject([{ key: { remoteJid: CUSTOMER, id: 'IN-10' }, messageStubType: 2, messageStubParameters: ['Bad MAC'] }]);
    sock.inject([textMessage('IN-10', 'readable now')]);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('message').map((e) => e.text), ['readable now']);
  });

  test('delivery receipts become "status" events', async () => {
    sock.updateStatus('OUT-1', 'delivered');
    sock.updateStatus('OUT-1', 'read');
    sock.updateStatus('OUT-1', 'pending');
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('status'), [
      { event: 'status', id: 'OUT-1', status: 'delivered', business_id: 1 },
      { event: 'status', id: 'OUT-1', status: 'read', business_id: 1 },
    ]);
  });
});

test('groups are forwarded when WA_FORWARD_GROUPS is on', async () => {
  const app = await startFakeApp();
  const t = await startTestBridge({ app, config: { forwardGroups: true } });
  try {
    await waitForOpen(t.bridge);
    t.makeSocket.current().inject([textMessage('G-1', 'hi all', { remoteJid: '120363025246125486@g.us', participant: CUSTOMER })]);
    await waitFor(() => app.events('message').length === 1, { what: 'group message' });
    const [event] = app.events('message');
    assert.deepEqual([event.chat, event.from], ['120363025246125486@g.us', '+972501234567']);
  } finally {
    await t.stop();
    await app.close();
  }
});

test('connection changes become "connection" events', async () => {
  const app = await startFakeApp();
  const t = await startTestBridge({ app, fake: { autoOpen: false, initialQr: '2@qr' } });
  try {
    await waitFor(() => t.status().qr, { what: 'QR code' });
    t.makeSocket.current().open();
    await waitForOpen(t.bridge);
    await t.bridge.whenForwardingIdle();
    assert.deepEqual(app.events('connection'), [
      { event: 'connection', state: 'connecting', qr: false, business_id: 1 },
      { event: 'connection', state: 'connecting', qr: true, business_id: 1 },
      { event: 'connection', state: 'open', qr: false, business_id: 1 },
    ]);
  } finally {
    await t.stop();
    await app.close();
  }
});
