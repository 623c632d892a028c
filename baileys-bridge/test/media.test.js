// Media through the bridge. Inbound, the fake socket delivers media as WhatsApp does (an encrypted
// file on an HTTPS media server, the message carrying url/directPath, mediaKey and hashes) and the
// bridge must download, decrypt, check and forward it. Outbound, /send with media must reach the
// socket as the matching WhatsApp media message.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, beforeEach, describe, test } from 'node:test';
import { downloadMediaMessage, getContentType, normalizeMessageContent } from '@whiskeysockets/baileys';
import { signedPost, startFakeApp, startTestBridge, waitForOpen } from './helpers.js';

const CUSTOMER = '+972501234567';
const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
// Bytes that look like the real thing at the start (an Ogg page, a JPEG marker) plus random content.
const VOICE_NOTE = Buffer.concat([Buffer.from('OggS\0\x02'), crypto.randomBytes(48 * 1024 + 7)]);
const PHOTO = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), crypto.randomBytes(200 * 1024 + 3)]);
const PDF = Buffer.concat([Buffer.from('%PDF-1.7\n'), crypto.randomBytes(30 * 1024)]);

describe('inbound media', () => {
  let app;
  let t;
  let sock;
  before(async () => {
    app = await startFakeApp();
    t = await startTestBridge({ app, config: { mediaMaxBytes: 256 * 1024 } });
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

  test('a voice note arrives decrypted, byte for byte, with its sha256', async () => {
    const injected = await sock.injectMedia({ from: CUSTOMER, id: 'VN-1', kind: 'audio', mimetype: 'audio/ogg; codecs=opus', data: VOICE_NOTE, ptt: true, seconds: 7 });
    // What travelled was ciphertext, not the note.
    const wire = injected.message.audioMessage;
    assert.match(wire.url, /^https:\/\/127\.0\.0\.1:\d+\/v\/t62\.7117-24\/.+\.enc\?/);
    assert.ok(wire.directPath.startsWith('/v/') && wire.mediaKey.length === 32 && wire.fileEncSha256.length === 32);
    assert.notEqual(sha256(wire.fileEncSha256), sha256(VOICE_NOTE));

    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.equal(event.business_id, 1);
    assert.equal(event.text, '');
    const { data, ...described } = event.media;
    assert.deepEqual(described, {
      kind: 'audio',
      mimetype: 'audio/ogg; codecs=opus',
      voice_note: true,
      seconds: 7,
      file_name: null,
      caption: null,
      size: VOICE_NOTE.length,
      sha256: sha256(VOICE_NOTE),
    });
    assert.ok(Buffer.from(data, 'base64').equals(VOICE_NOTE), 'byte-identical after decryption');
    assert.equal(t.makeSocket.media.downloads.filter((d) => wire.directPath.startsWith(d.path)).length, 1, 'fetched from the media server');
  });

  test('a photo arrives with its caption as the message text', async () => {
    await sock.injectMedia({ from: CUSTOMER, id: 'IMG-1', kind: 'image', mimetype: 'image/jpeg', data: PHOTO, caption: 'הנה התמונה' });
    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.equal(event.text, 'הנה התמונה');
    assert.equal(event.media.kind, 'image');
    assert.equal(event.media.voice_note, false);
    assert.equal(event.media.caption, 'הנה התמונה');
    assert.equal(event.media.sha256, sha256(PHOTO));
    assert.ok(Buffer.from(event.media.data, 'base64').equals(PHOTO));
  });

  test('a document keeps its file name; a sticker has no text', async () => {
    await sock.injectMedia({ from: CUSTOMER, id: 'DOC-1', kind: 'document', mimetype: 'application/pdf', data: PDF, fileName: 'invoice.pdf' });
    await sock.injectMedia({ from: CUSTOMER, id: 'STK-1', kind: 'sticker', mimetype: 'image/webp', data: Buffer.from('RIFF....WEBPVP8 ') });
    await t.bridge.whenForwardingIdle();
    const [doc, sticker] = app.events('message');
    assert.deepEqual([doc.media.kind, doc.media.file_name, doc.text, doc.media.sha256], ['document', 'invoice.pdf', '', sha256(PDF)]);
    assert.deepEqual([sticker.media.kind, sticker.text], ['sticker', '']);
  });

  test('media over WA_MEDIA_MAX_BYTES are refused with error too_large and no data; the message still arrives', async () => {
    const big = crypto.randomBytes(256 * 1024 + 1);
    await sock.injectMedia({ from: CUSTOMER, id: 'BIG-1', kind: 'video', mimetype: 'video/mp4', data: big, caption: 'long video' });
    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.equal(event.text, 'long video');
    assert.deepEqual(event.media, { kind: 'video', mimetype: 'video/mp4', size: big.length, error: 'too_large' });
  });

  test('a file whose declared length lies is still cut off at the limit while it streams', async () => {
    const big = crypto.randomBytes(300 * 1024);
    await sock.injectMedia({ from: CUSTOMER, id: 'LIE-1', kind: 'document', mimetype: 'application/zip', data: big, fields: { fileLength: 1000 } });
    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.equal(event.media.error, 'too_large');
    assert.equal(event.media.data, undefined);
    assert.ok(event.media.size > 256 * 1024);
  });

  test('bytes that do not match the message fileSha256 are refused with download_failed', async () => {
    const injected = await sock.injectMedia({ from: CUSTOMER, id: 'BAD-1', kind: 'image', mimetype: 'image/jpeg', data: PHOTO, fields: { fileSha256: crypto.randomBytes(32) } });
    await t.bridge.whenForwardingIdle();
    const [event] = app.events('message');
    assert.equal(injected.key.id, 'BAD-1');
    assert.deepEqual(event.media, { kind: 'image', mimetype: 'image/jpeg', size: PHOTO.length, error: 'download_failed' });
  });

  test('a file the media server no longer has is refused with download_failed, and later messages still flow', async () => {
    const injected = await sock.injectMedia({ from: CUSTOMER, id: 'GONE-1', kind: 'image', mimetype: 'image/jpeg', data: PHOTO, fields: { directPath: '/v/t62.7117-24/missing.enc?ccb=11-4' } });
    sock.inject([{ key: { remoteJid: '972501234567@s.whatsapp.net', fromMe: false, id: 'AFTER-1' }, message: { conversation: 'after' } }]);
    await t.bridge.whenForwardingIdle();
    const events = app.events('message');
    assert.deepEqual(events.map((e) => e.id), [injected.key.id, 'AFTER-1'], 'in order: the text waited for the download');
    assert.equal(events[0].media.error, 'download_failed');
  });
});

describe('outbound media', () => {
  let t;
  before(async () => {
    t = await startTestBridge({ config: { mediaMaxBytes: 64 * 1024 } });
    await waitForOpen(t.bridge);
  });
  after(() => t.stop());

  test('a document sent with /send reaches WhatsApp as a document message', async () => {
    const res = await signedPost(`${t.base}/send`, {
      business_id: 1,
      to: CUSTOMER,
      text: 'החשבונית שלך',
      idempotency_key: 'doc-1',
      media: { kind: 'document', mimetype: 'application/pdf', file_name: 'invoice.pdf', data: PDF.toString('base64') },
    });
    assert.equal(res.status, 200);
    const { id } = await res.json();
    const sent = t.makeSocket.sent.at(-1);
    assert.equal(sent.id, id);
    assert.equal(sent.jid, '972501234567@s.whatsapp.net');
    // Baileys made a WhatsApp message of it: encrypted, uploaded, with the file's metadata.
    const content = normalizeMessageContent(sent.message);
    assert.equal(getContentType(content), 'documentMessage');
    const doc = content.documentMessage;
    assert.deepEqual([doc.mimetype, doc.fileName, doc.caption], ['application/pdf', 'invoice.pdf', 'החשבונית שלך']);
    assert.equal(Buffer.from(doc.fileSha256).toString('hex'), sha256(PDF));
    // The recipient's phone can download and decrypt it back.
    const received = await downloadMediaMessage({ key: { id }, message: sent.message }, 'buffer', {});
    assert.ok(received.equals(PDF));

    const repeat = await signedPost(`${t.base}/send`, {
      business_id: 1,
      to: CUSTOMER,
      text: 'החשבונית שלך',
      idempotency_key: 'doc-1',
      media: { kind: 'document', mimetype: 'application/pdf', file_name: 'invoice.pdf', data: PDF.toString('base64') },
    });
    assert.deepEqual(await repeat.json(), { id }, 'an idempotent repeat sends nothing');
    const other = await signedPost(`${t.base}/send`, {
      business_id: 1,
      to: CUSTOMER,
      text: 'החשבונית שלך',
      idempotency_key: 'doc-1',
      media: { kind: 'document', mimetype: 'application/pdf', file_name: 'invoice.pdf', data: PHOTO.subarray(0, 3000).toString('base64') },
    });
    assert.equal(other.status, 409, 'the same key with other bytes is a conflict');
  });

  test('an image with a caption, and a voice note, become image and audio messages', async () => {
    const small = PHOTO.subarray(0, 20 * 1024);
    await signedPost(`${t.base}/send`, { business_id: 1, to: CUSTOMER, text: 'look', media: { kind: 'image', mimetype: 'image/jpeg', data: small.toString('base64') } });
    const image = normalizeMessageContent(t.makeSocket.sent.at(-1).message);
    assert.equal(getContentType(image), 'imageMessage');
    assert.equal(image.imageMessage.caption, 'look');

    const voice = VOICE_NOTE.subarray(0, 10 * 1024);
    const res = await signedPost(`${t.base}/send`, { business_id: 1, to: CUSTOMER, media: { kind: 'audio', mimetype: 'audio/ogg; codecs=opus', voice_note: true, data: voice.toString('base64') } });
    assert.equal(res.status, 200);
    const audio = normalizeMessageContent(t.makeSocket.sent.at(-1).message);
    assert.equal(getContentType(audio), 'audioMessage');
    assert.equal(audio.audioMessage.ptt, true);
  });

  test('bad media answer 400/413 and send nothing', async () => {
    const before = t.makeSocket.sent.length;
    const ok = { kind: 'image', mimetype: 'image/jpeg', data: PHOTO.subarray(0, 1000).toString('base64') };
    const cases = [
      [{ media: 'x' }, 400, 'invalid_media'],
      [{ media: { ...ok, kind: 'sticker' } }, 400, 'invalid_media'],
      [{ media: { ...ok, mimetype: 'jpeg' } }, 400, 'invalid_media'],
      [{ media: { ...ok, data: 'not base64!' } }, 400, 'invalid_media'],
      [{ media: { ...ok, data: '' } }, 400, 'invalid_media'],
      [{ media: { ...ok, file_name: 'x'.repeat(300) } }, 400, 'invalid_media'],
      [{ media: { ...ok, kind: 'audio', mimetype: 'audio/ogg' }, text: 'captions do not show under audio' }, 400, 'invalid_text'],
      [{ media: { ...ok, data: crypto.randomBytes(64 * 1024 + 1).toString('base64') } }, 413, 'media_too_large'],
    ];
    for (const [extra, status, code] of cases) {
      const res = await signedPost(`${t.base}/send`, { business_id: 1, to: CUSTOMER, ...extra });
      assert.equal(res.status, status, JSON.stringify(extra).slice(0, 80));
      assert.equal((await res.json()).error, code);
    }
    assert.equal(t.makeSocket.sent.length, before);
  });
});
