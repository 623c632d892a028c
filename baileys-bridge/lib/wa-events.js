// Translation between Baileys' shapes and the bridge → app payloads (README.md, "Events sent to the app").
// Pure functions: no socket, no I/O.
import {
  getContentType,
  isHostedPnUser,
  isJidBroadcast,
  isJidGroup,
  isJidNewsletter,
  isLidUser,
  isPnUser,
  jidDecode,
  jidNormalizedUser,
  normalizeMessageContent,
  WAMessageStatus,
} from '@whiskeysockets/baileys';

const E164 = /^\+[1-9]\d{7,14}$/;
const LID_JID = /^\d{1,20}@lid$/;

/** "9725…:12@s.whatsapp.net" → "+9725…"; null for anything that is not a phone-number JID. */
export function phoneFromJid(jid) {
  if (!jid || !(isPnUser(jid) || isHostedPnUser(jid))) return null;
  const user = jidDecode(jid)?.user;
  return user && /^\d{8,15}$/.test(user) ? `+${user}` : null;
}

/** "1234:5@lid" → "1234@lid"; null for anything that is not a LID. */
export function lidFromJid(jid) {
  return jid && isLidUser(jid) ? jidNormalizedUser(jid) : null;
}

/**
 * Where POST /send may deliver: an E.164 number (optionally "whatsapp:+…", the form the app uses
 * for Twilio) or a LID, for customers WhatsApp shows us only by LID. Returns the JID or null.
 */
export function recipientJid(to) {
  if (typeof to !== 'string') return null;
  const value = to.trim().replace(/^whatsapp:/i, '');
  if (E164.test(value)) return `${value.slice(1)}@s.whatsapp.net`;
  if (LID_JID.test(value)) return value;
  return null;
}

function withDetail(placeholder, ...details) {
  const detail = details.find((d) => typeof d === 'string' && d.trim() !== '');
  return detail ? `${placeholder} ${detail.trim()}` : placeholder;
}

// Content types that carry something a person wrote or sent. Anything else a chat can contain
// (reactions, deletions, edits, key distribution, poll votes…) is not a new message for the CRM.
const TEXT_OF = {
  conversation: (c) => c,
  extendedTextMessage: (c) => c.text,
  imageMessage: (c) => withDetail('[image]', c.caption),
  videoMessage: (c) => withDetail('[video]', c.caption),
  ptvMessage: (c) => withDetail('[video]', c.caption),
  audioMessage: () => '[audio]',
  documentMessage: (c) => withDetail('[document]', c.caption, c.fileName),
  stickerMessage: () => '[sticker]',
  locationMessage: (c) => withDetail('[location]', c.name, c.address),
  liveLocationMessage: (c) => withDetail('[location]', c.caption),
  contactMessage: (c) => withDetail('[contact]', c.displayName),
  contactsArrayMessage: (c) => withDetail('[contact]', c.displayName),
  pollCreationMessage: (c) => withDetail('[poll]', c.name),
  pollCreationMessageV3: (c) => withDetail('[poll]', c.name),
  buttonsResponseMessage: (c) => c.selectedDisplayText ?? c.selectedButtonId,
  templateButtonReplyMessage: (c) => c.selectedDisplayText ?? c.selectedId,
  listResponseMessage: (c) => c.title ?? c.singleSelectReply?.selectedRowId,
};

/** The text to store for a message, or null when it is not a message a person sent. */
export function messageText(message) {
  const content = normalizeMessageContent(message);
  const type = getContentType(content);
  const extract = type && TEXT_OF[type];
  if (!extract) return null;
  const text = extract(content[type] ?? {});
  return typeof text === 'string' && text !== '' ? text : null;
}

// messageTimestamp arrives as a number, a protobuf Long, a string or (rarely) nothing.
function unixSeconds(value, nowMs) {
  if (typeof value === 'number' && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value);
  if (value && typeof value.toNumber === 'function') return value.toNumber();
  return Math.floor(nowMs / 1000);
}

/** Scope for duplicate suppression: key.id alone is not unique across chats or group members. */
export function dedupeKey(key) {
  return `${key.remoteJid}|${key.participant ?? ''}|${key.id}`;
}

/**
 * Why an upserted message is not forwarded, or null when it should be.
 * Own messages, status broadcasts, channels and (unless enabled) groups are skipped.
 */
export function skipReason(msg, { forwardGroups }) {
  const key = msg.key ?? {};
  if (!key.id || !key.remoteJid) return 'no_key';
  if (key.fromMe) return 'from_me';
  if (isJidBroadcast(key.remoteJid)) return 'broadcast';
  if (isJidNewsletter(key.remoteJid)) return 'newsletter';
  if (isJidGroup(key.remoteJid) && !forwardGroups) return 'group';
  return null;
}

/**
 * The "message" payload for one inbound WAMessage, or null when it carries no content.
 * In a group the sender is key.participant, otherwise key.remoteJid; whichever of the sender's
 * JID and its alternates (v7 remoteJidAlt/participantAlt, 6.7's senderPn/senderLid) is a phone number gives
 * "from", and whichever is a LID gives "lid".
 */
export function messagePayload(msg, { ownJid, nowMs }) {
  const text = messageText(msg.message);
  if (text === null) return null;
  const key = msg.key;
  const inGroup = isJidGroup(key.remoteJid);
  const senderJids = inGroup
    ? [key.participant, key.participantAlt, key.participantPn, key.participantLid]
    : [key.remoteJid, key.remoteJidAlt, key.senderPn, key.senderLid];
  return {
    event: 'message',
    id: key.id,
    chat: key.remoteJid,
    from: senderJids.map(phoneFromJid).find(Boolean) ?? null,
    lid: senderJids.map(lidFromJid).find(Boolean) ?? null,
    push_name: msg.pushName ?? null,
    text,
    timestamp: unixSeconds(msg.messageTimestamp, nowMs),
    to: phoneFromJid(ownJid),
  };
}

const STATUS_NAMES = {
  [WAMessageStatus.ERROR]: 'failed',
  [WAMessageStatus.SERVER_ACK]: 'sent',
  [WAMessageStatus.DELIVERY_ACK]: 'delivered',
  [WAMessageStatus.READ]: 'read',
  [WAMessageStatus.PLAYED]: 'read',
};

/**
 * The "status" payload for one messages.update entry, or null. Only our own messages have a
 * delivery status worth reporting; PENDING is skipped because the /send answer already says it.
 */
export function statusPayload({ key, update }) {
  if (!key?.fromMe || !key.id || isJidBroadcast(key.remoteJid) || update?.status == null) return null;
  const status = STATUS_NAMES[update.status];
  return status ? { event: 'status', id: key.id, status } : null;
}
