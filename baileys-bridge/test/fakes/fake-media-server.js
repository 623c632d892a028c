// WhatsApp's media servers (mmg.whatsapp.net), faked: an HTTPS server on 127.0.0.1 that stores
// encrypted files and serves them back at their directPath. Files are encrypted with Baileys' own
// encryptedStream (AES-256-CBC + HMAC under keys derived from a random mediaKey), exactly the
// format Baileys' downloadMediaMessage decrypts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { encryptedStream } from '@whiskeysockets/baileys';

const TLS = {
  key: fs.readFileSync(new URL('./tls/media-server.key', import.meta.url)),
  cert: fs.readFileSync(new URL('./tls/media-server.crt', import.meta.url)),
};

// WhatsApp's mediaType for the key derivation (HKDF info) of each kind.
const MEDIA_TYPE = { image: 'image', video: 'video', audio: 'audio', document: 'document', sticker: 'sticker' };

export function createFakeMediaServer() {
  const files = new Map(); // directPath without the query → encrypted bytes
  const downloads = [];
  let listening = null;

  const server = https.createServer(TLS, (req, res) => {
    const path = new URL(req.url, 'https://media').pathname;
    downloads.push({ path, at: Date.now() });
    const body = files.get(path);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });

  function ready() {
    listening ??= new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
    return listening;
  }

  // Stores an encrypted file; answers the url and directPath WhatsApp would.
  async function store(encrypted, mediaType) {
    const port = await ready();
    const name = crypto.randomBytes(12).toString('hex');
    const path = `/v/t62.7117-24/${name}.enc`;
    files.set(path, encrypted);
    const directPath = `${path}?ccb=11-4&oh=01_fake&oe=68000000&_nc_sid=5e03e0`;
    return { mediaUrl: `https://127.0.0.1:${port}${directPath}&mms3=true`, directPath, mediaType };
  }

  /** Encrypts bytes as WhatsApp does and stores them: the fields of a media message. */
  async function upload(bytes, kind) {
    const mediaType = MEDIA_TYPE[kind];
    const { mediaKey, encFilePath, fileEncSha256, fileSha256, fileLength } = await encryptedStream(Buffer.from(bytes), mediaType);
    try {
      const { mediaUrl, directPath } = await store(fs.readFileSync(encFilePath), mediaType);
      return { url: mediaUrl, directPath, mediaKey, fileEncSha256, fileSha256, fileLength };
    } finally {
      fs.rmSync(encFilePath, { force: true });
    }
  }

  /** Baileys' upload callback (options.upload of generateWAMessageContent): an encrypted file on disk. */
  async function uploadFile(filePath, { mediaType }) {
    return store(fs.readFileSync(filePath), mediaType);
  }

  return {
    ready,
    upload,
    uploadFile,
    downloads,
    /** Replaces a stored file's bytes (to test a file that does not match its fileSha256). */
    tamper(directPath, bytes) {
      files.set(directPath.split('?')[0], bytes);
    },
    close: () => new Promise((resolve) => (listening ? server.close(() => resolve()) : resolve())),
  };
}
