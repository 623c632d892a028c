// Media both ways (README.md, "Media"):
//  - inbound: WhatsApp delivers a media message as a link to an encrypted file (url/directPath,
//    mediaKey, fileSha256…); Baileys' downloadMediaMessage fetches and decrypts it. Here the bytes
//    are counted against WA_MEDIA_MAX_BYTES while they stream, checked against the message's
//    fileSha256, and turned into the event's "media" object;
//  - outbound: the /send body's "media" is checked and turned into the content sock.sendMessage
//    takes (Baileys encrypts and uploads it).
import crypto from 'node:crypto';
import { downloadMediaMessage, getContentType, normalizeMessageContent } from '@whiskeysockets/baileys';

const KIND_OF_TYPE = {
  imageMessage: 'image',
  videoMessage: 'video',
  ptvMessage: 'video', // round "video notes"
  audioMessage: 'audio',
  documentMessage: 'document',
  stickerMessage: 'sticker',
};

export const OUTBOUND_KINDS = ['image', 'document', 'audio', 'video'];
const MIME_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}(\s*;.{0,200})?$/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MAX_FILE_NAME = 255;

// Protobuf numbers arrive as numbers, Longs or (from JSON) strings.
function toNumber(value) {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value);
  if (typeof value === 'bigint') return Number(value);
  if (value && typeof value.toNumber === 'function') return value.toNumber();
  return null;
}

// Protobuf bytes arrive as Uint8Array, or base64 from JSON.
function toBytes(value) {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (typeof value === 'string' && value !== '') return Buffer.from(value, 'base64');
  return null;
}

/** The media a message carries ({ kind, content }), or null for a message without any. */
export function mediaOf(message) {
  const normalized = normalizeMessageContent(message);
  const type = getContentType(normalized);
  const kind = type && KIND_OF_TYPE[type];
  return kind ? { kind, content: normalized[type] ?? {} } : null;
}

function describe(kind, content) {
  return {
    kind,
    mimetype: typeof content.mimetype === 'string' ? content.mimetype : 'application/octet-stream',
    voice_note: kind === 'audio' && content.ptt === true,
    seconds: toNumber(content.seconds),
    file_name: typeof content.fileName === 'string' && content.fileName !== '' ? content.fileName : null,
    caption: typeof content.caption === 'string' && content.caption !== '' ? content.caption : null,
  };
}

function withTimeout(promise, ms, onTimeout) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new Error(`media download took over ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Downloads and decrypts the media of msg (a WAMessage for which mediaOf() is not null).
 * Resolves to the event's "media" object: with size, sha256 and base64 data, or, when refused,
 * { kind, mimetype, size, error: "too_large" | "download_failed" }. Never rejects.
 * reuploadRequest (the socket's updateMediaMessage) lets Baileys ask the sender's phone to upload
 * again a file WhatsApp's servers no longer have.
 */
export async function downloadInboundMedia(msg, { maxBytes, timeoutMs, logger, reuploadRequest }) {
  const { kind, content } = mediaOf(msg.message);
  const info = describe(kind, content);
  const declared = toNumber(content.fileLength);
  const refused = (error, size) => ({ kind, mimetype: info.mimetype, size: size ?? declared ?? 0, error });
  if (declared !== null && declared > maxBytes) return refused('too_large');

  let stream = null;
  try {
    const ctx = reuploadRequest ? { logger, reuploadRequest } : undefined;
    const read = (async () => {
      stream = await downloadMediaMessage(msg, 'stream', {}, ctx);
      const chunks = [];
      const hash = crypto.createHash('sha256');
      let size = 0;
      for await (const chunk of stream) {
        size += chunk.length;
        // The declared fileLength is the sender's word; the bytes are counted as they arrive.
        if (size > maxBytes) {
          stream.destroy();
          return refused('too_large', size);
        }
        hash.update(chunk);
        chunks.push(chunk);
      }
      const sha256 = hash.digest();
      const expected = toBytes(content.fileSha256);
      if (expected && !expected.equals(sha256)) {
        logger.warn({ id: msg.key?.id, kind }, 'media bytes do not match the message fileSha256');
        return refused('download_failed', size);
      }
      const data = Buffer.concat(chunks);
      return { ...info, size, sha256: sha256.toString('hex'), data: data.toString('base64') };
    })();
    return await withTimeout(read, timeoutMs, () => stream?.destroy());
  } catch (error) {
    logger.warn({ err: error, id: msg.key?.id, kind }, 'media download failed');
    return refused('download_failed');
  }
}

export class MediaRequestError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * The sock.sendMessage content for a /send body's "media" ({kind, mimetype, file_name?, data,
 * voice_note?}) with text as the caption, plus a fingerprint of the bytes for idempotency.
 * Throws MediaRequestError (400/413) for what cannot be sent.
 */
export function outboundMediaContent(media, text, { maxBytes }) {
  const invalid = (message) => new MediaRequestError(400, 'invalid_media', message);
  if (media === null || typeof media !== 'object' || Array.isArray(media)) throw invalid('"media" must be an object');
  const { kind, mimetype, file_name: fileName, data, voice_note: voiceNote } = media;
  if (!OUTBOUND_KINDS.includes(kind)) throw invalid(`"media.kind" must be one of ${OUTBOUND_KINDS.join(', ')}`);
  if (typeof mimetype !== 'string' || !MIME_TYPE.test(mimetype)) throw invalid('"media.mimetype" must be a MIME type like image/jpeg');
  if (fileName != null && (typeof fileName !== 'string' || fileName.length > MAX_FILE_NAME)) {
    throw invalid(`"media.file_name" must be a string of at most ${MAX_FILE_NAME} characters`);
  }
  if (voiceNote != null && typeof voiceNote !== 'boolean') throw invalid('"media.voice_note" must be true or false');
  if (typeof data !== 'string' || data === '' || data.length % 4 !== 0 || !BASE64.test(data)) {
    throw invalid('"media.data" must be non-empty base64');
  }
  const bytes = Buffer.from(data, 'base64');
  if (bytes.length > maxBytes) throw new MediaRequestError(413, 'media_too_large', `media over ${maxBytes} bytes`);
  const caption = typeof text === 'string' && text.trim() !== '' ? text : undefined;
  // WhatsApp shows no caption under audio: refused rather than silently dropped.
  if (kind === 'audio' && caption) throw new MediaRequestError(400, 'invalid_text', 'audio cannot carry a caption; send the text separately');

  const fingerprint = crypto.createHash('sha256').update(bytes).digest('hex');
  const content = { [kind]: bytes, mimetype };
  if (kind === 'document') content.fileName = fileName || 'file';
  if (kind === 'audio') content.ptt = voiceNote === true;
  if (caption) content.caption = caption;
  return { content, fingerprint };
}
