import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  dedupeKey,
  lidFromJid,
  messagePayload,
  messageText,
  phoneFromJid,
  recipientJid,
  skipReason,
  statusPayload,
} from '../lib/wa-events.js';

const OWN_JID = '972509876543:12@s.whatsapp.net';
const NOW_MS = 1767225600000;

function payloadOf(msg) {
  return messagePayload(msg, { ownJid: OWN_JID, nowMs: NOW_MS });
}

test('phone numbers come from phone JIDs only, without the device suffix', () => {
  assert.equal(phoneFromJid('972501234567@s.whatsapp.net'), '+972501234567');
  assert.equal(phoneFromJid('972501234567:12@s.whatsapp.net'), '+972501234567');
  assert.equal(phoneFromJid('123456789012345@lid'), null);
  assert.equal(phoneFromJid('120363025246125486@g.us'), null);
  assert.equal(phoneFromJid(undefined), null);
  assert.equal(lidFromJid('123456789012345:3@lid'), '123456789012345@lid');
  assert.equal(lidFromJid('972501234567@s.whatsapp.net'), null);
});

test('recipients: E.164, whatsapp:+E.164 or a LID', () => {
  assert.equal(recipientJid('+972501234567'), '972501234567@s.whatsapp.net');
  assert.equal(recipientJid(' whatsapp:+972501234567 '), '972501234567@s.whatsapp.net');
  assert.equal(recipientJid('123456789012345@lid'), '123456789012345@lid');
  for (const bad of ['972501234567', '0501234567', '+0501234567', '+97250', '+972-50-123', 'x@g.us', null, 5]) {
    assert.equal(recipientJid(bad), null, String(bad));
  }
});

test('text and media placeholders', () => {
  assert.equal(messageText({ conversation: 'שלום' }), 'שלום');
  assert.equal(messageText({ extendedTextMessage: { text: 'link https://example.com' } }), 'link https://example.com');
  assert.equal(messageText({ imageMessage: { caption: 'the receipt' } }), '[image] the receipt');
  assert.equal(messageText({ imageMessage: {} }), '[image]');
  assert.equal(messageText({ videoMessage: {} }), '[video]');
  assert.equal(messageText({ audioMessage: { ptt: true } }), '[audio]');
  assert.equal(messageText({ documentMessage: { fileName: 'invoice.pdf' } }), '[document] invoice.pdf');
  assert.equal(messageText({ stickerMessage: {} }), '[sticker]');
  assert.equal(messageText({ locationMessage: { degreesLatitude: 32.08, degreesLongitude: 34.78 } }), '[location]');
  // Wrappers (disappearing messages, view once) are unwrapped.
  assert.equal(messageText({ ephemeralMessage: { message: { conversation: 'hidden' } } }), 'hidden');
  assert.equal(messageText({ viewOnceMessageV2: { message: { imageMessage: {} } } }), '[image]');
  // messageContextInfo rides along with real content and must not hide it.
  assert.equal(messageText({ messageContextInfo: {}, conversation: 'hi' }), 'hi');
  // Not something a person wrote: no CRM message.
  assert.equal(messageText({ reactionMessage: { text: '👍' } }), null);
  assert.equal(messageText({ protocolMessage: { type: 0 } }), null);
  assert.equal(messageText(null), null);
});

test('a phone-number chat', () => {
  const msg = {
    key: { remoteJid: '972501234567@s.whatsapp.net', fromMe: false, id: '3EB0AAA' },
    pushName: 'דנה',
    messageTimestamp: 1767225590,
    message: { conversation: 'אפשר לקבוע תור?' },
  };
  assert.deepEqual(payloadOf(msg), {
    event: 'message',
    id: '3EB0AAA',
    chat: '972501234567@s.whatsapp.net',
    from: '+972501234567',
    lid: null,
    push_name: 'דנה',
    text: 'אפשר לקבוע תור?',
    timestamp: 1767225590,
    to: '+972509876543',
  });
});

test('a LID chat with the phone number in remoteJidAlt', () => {
  const msg = {
    key: { remoteJid: '140913951141911@lid', remoteJidAlt: '972501234567@s.whatsapp.net', id: 'X1', addressingMode: 'lid' },
    message: { conversation: 'hi' },
    messageTimestamp: { low: 1767225590, high: 0, unsigned: true, toNumber: () => 1767225590 },
  };
  const payload = payloadOf(msg);
  assert.equal(payload.chat, '140913951141911@lid');
  assert.equal(payload.from, '+972501234567');
  assert.equal(payload.lid, '140913951141911@lid');
  assert.equal(payload.timestamp, 1767225590, 'protobuf Long timestamps become numbers');
  assert.equal(payload.push_name, null);
});

test('a LID chat with no known phone number has from null', () => {
  const payload = payloadOf({ key: { remoteJid: '140913951141911@lid', id: 'X2' }, message: { conversation: 'hi' } });
  assert.equal(payload.from, null);
  assert.equal(payload.lid, '140913951141911@lid');
  assert.equal(payload.timestamp, NOW_MS / 1000, 'a missing timestamp falls back to now');
});

test('older senderPn, and a phone chat that also names its LID', () => {
  const legacy = payloadOf({ key: { remoteJid: '140913951141911@lid', senderPn: '972501234567@s.whatsapp.net', id: 'X3' }, message: { conversation: 'a' } });
  assert.equal(legacy.from, '+972501234567');
  const both = payloadOf({ key: { remoteJid: '972501234567@s.whatsapp.net', remoteJidAlt: '140913951141911@lid', id: 'X4' }, message: { conversation: 'b' } });
  assert.equal(both.from, '+972501234567');
  assert.equal(both.lid, '140913951141911@lid');
});

test('in a group the sender is the participant', () => {
  const payload = payloadOf({
    key: { remoteJid: '120363025246125486@g.us', participant: '140913951141911@lid', participantAlt: '972501234567@s.whatsapp.net', id: 'G1' },
    message: { conversation: 'hello all' },
  });
  assert.equal(payload.chat, '120363025246125486@g.us');
  assert.equal(payload.from, '+972501234567');
  assert.equal(payload.lid, '140913951141911@lid');
});

test('a message without readable content is not a payload', () => {
  assert.equal(payloadOf({ key: { remoteJid: '972501234567@s.whatsapp.net', id: 'S1' }, messageStubType: 2, messageStubParameters: ['Bad MAC'] }), null);
});

test('skip rules', () => {
  const from = (remoteJid, extra = {}) => ({ key: { remoteJid, id: 'Z', ...extra } });
  const options = { forwardGroups: false };
  assert.equal(skipReason(from('972501234567@s.whatsapp.net'), options), null);
  assert.equal(skipReason(from('972501234567@s.whatsapp.net', { fromMe: true }), options), 'from_me');
  assert.equal(skipReason(from('status@broadcast'), options), 'broadcast');
  assert.equal(skipReason(from('120363025246125486@newsletter'), options), 'newsletter');
  assert.equal(skipReason(from('120363025246125486@g.us'), options), 'group');
  assert.equal(skipReason(from('120363025246125486@g.us'), { forwardGroups: true }), null);
  assert.equal(skipReason({ key: { remoteJid: 'a@s.whatsapp.net' } }, options), 'no_key');
});

test('duplicates are scoped by chat and participant', () => {
  const a = dedupeKey({ remoteJid: '972501234567@s.whatsapp.net', id: 'SAME' });
  const b = dedupeKey({ remoteJid: '972507654321@s.whatsapp.net', id: 'SAME' });
  const c = dedupeKey({ remoteJid: '1203@g.us', participant: '1@lid', id: 'SAME' });
  const d = dedupeKey({ remoteJid: '1203@g.us', participant: '2@lid', id: 'SAME' });
  assert.equal(new Set([a, b, c, d]).size, 4);
});

test('status updates map WAMessageStatus numbers, for our own messages only', () => {
  const update = (status, fromMe = true) => statusPayload({ key: { id: 'M1', fromMe, remoteJid: '972501234567@s.whatsapp.net' }, update: { status } });
  assert.deepEqual(update(0), { event: 'status', id: 'M1', status: 'failed' });
  assert.equal(update(1), null, 'PENDING is skipped');
  assert.equal(update(2).status, 'sent');
  assert.equal(update(3).status, 'delivered');
  assert.equal(update(4).status, 'read');
  assert.equal(update(5).status, 'read');
  assert.equal(update(3, false), null);
  assert.equal(statusPayload({ key: { id: 'M1', fromMe: true }, update: { message: {} } }), null, 'edits are not statuses');
});
