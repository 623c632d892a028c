// HTTP plumbing: routing, body size limit, signature check over the raw bytes, JSON parsing and
// the one error shape {"error": "<code>", "message": "…"}. What each route does lives in bridge.js.
import http from 'node:http';
import { SIGNATURE_HEADER } from './signing.js';

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function jsonResponse(status, body) {
  return { status, contentType: 'application/json', body: JSON.stringify(body) };
}

export function errorResponse(status, code, message) {
  return jsonResponse(status, { error: code, message });
}

function readBody(req, maxBytes) {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length']) > maxBytes) {
      reject(new HttpError(413, 'body_too_large', `body over ${maxBytes} bytes`));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > maxBytes) {
        reject(new HttpError(413, 'body_too_large', `body over ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJsonObject(rawBody) {
  let body;
  try {
    body = JSON.parse(rawBody.toString('utf8'));
  } catch {
    throw new HttpError(400, 'bad_json', 'body is not valid JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'bad_json', 'body must be a JSON object');
  }
  return body;
}

/**
 * routes: { "METHOD /path": { handler({ body }) → response, signed?: bool, json?: bool } }
 * Signed and json routes read the body (at most maxBodyBytes); json routes get it parsed.
 * A response is { status, contentType, body, headers? }; see jsonResponse().
 * verifySignature(header, rawBody) → { ok, reason } checks signed routes before parsing.
 */
export function createHttpServer({ routes, maxBodyBytes, verifySignature, logger }) {
  const methodsByPath = new Map();
  for (const name of Object.keys(routes)) {
    const [method, path] = name.split(' ');
    methodsByPath.set(path, [...(methodsByPath.get(path) ?? []), method]);
  }

  async function respond(req) {
    const path = new URL(req.url, 'http://bridge').pathname;
    const route = routes[`${req.method} ${path}`];
    if (!route) {
      const allowed = methodsByPath.get(path);
      if (allowed) return { ...errorResponse(405, 'method_not_allowed', `use ${allowed.join(', ')}`), headers: { allow: allowed.join(', ') } };
      return errorResponse(404, 'not_found', `no route ${req.method} ${path}`);
    }
    const rawBody = route.signed || route.json ? await readBody(req, maxBodyBytes) : Buffer.alloc(0);
    if (route.signed) {
      const check = verifySignature(req.headers[SIGNATURE_HEADER], rawBody);
      if (!check.ok) {
        logger.warn({ path, reason: check.reason }, 'rejected request signature');
        return errorResponse(401, 'unauthorized', 'missing, invalid or expired X-Bridge-Signature');
      }
    }
    const body = route.json ? parseJsonObject(rawBody) : undefined;
    return route.handler({ body });
  }

  return http.createServer(async (req, res) => {
    let response;
    try {
      response = await respond(req);
    } catch (error) {
      if (error instanceof HttpError) {
        response = errorResponse(error.status, error.code, error.message);
        // The rest of an oversized body is not worth reading; close the connection after answering.
        if (error.status === 413) response.headers = { connection: 'close' };
      } else {
        logger.error({ err: error, path: req.url }, 'request failed');
        response = errorResponse(500, 'internal', 'internal error');
      }
    }
    res.writeHead(response.status, {
      'content-type': response.contentType,
      'cache-control': 'no-store',
      ...response.headers,
    });
    res.end(response.body);
    // Discard whatever the client is still sending (after a 413, or to a route that reads no body).
    req.resume();
  });
}
