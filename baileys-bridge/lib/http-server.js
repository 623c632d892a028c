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

// "/instances/:id/logout" → a matcher that answers { id: "7" } for "/instances/7/logout", else null.
function pathMatcher(pattern) {
  const parts = pattern.split('/');
  if (!parts.some((part) => part.startsWith(':'))) return (path) => (path === pattern ? {} : null);
  return (path) => {
    const segments = path.split('/');
    if (segments.length !== parts.length) return null;
    const params = {};
    for (const [i, part] of parts.entries()) {
      if (part.startsWith(':')) {
        if (segments[i] === '') return null;
        try {
          params[part.slice(1)] = decodeURIComponent(segments[i]);
        } catch {
          return null; // a malformed %-escape names no resource
        }
      } else if (part !== segments[i]) {
        return null;
      }
    }
    return params;
  };
}

/**
 * routes: { "METHOD /path": { handler({ body, query, params }) → response, signed?: bool, json?: bool,
 * maxBodyBytes?: number } }. A path segment ":name" matches any one segment (params.name).
 * Signed and json routes read the body (at most maxBodyBytes, or the route's own limit); json
 * routes get it parsed. query is the URL's URLSearchParams.
 * A response is { status, contentType, body, headers? }; see jsonResponse().
 * verifySignature({ header, method, target, rawBody }) → { ok, reason } checks signed routes before
 * parsing; target is the request's path and query as received.
 */
export function createHttpServer({ routes, maxBodyBytes, verifySignature, logger }) {
  const table = Object.entries(routes).map(([name, route]) => {
    const [method, pattern] = name.split(' ');
    return { method, match: pathMatcher(pattern), route };
  });

  async function respond(req) {
    const url = new URL(req.url, 'http://bridge');
    const path = url.pathname;
    let route = null;
    let params = null;
    const allowed = [];
    for (const entry of table) {
      const matched = entry.match(path);
      if (!matched) continue;
      allowed.push(entry.method);
      if (entry.method === req.method) [route, params] = [entry.route, matched];
    }
    if (!route) {
      if (allowed.length) return { ...errorResponse(405, 'method_not_allowed', `use ${allowed.join(', ')}`), headers: { allow: allowed.join(', ') } };
      return errorResponse(404, 'not_found', `no route ${req.method} ${path}`);
    }
    const rawBody = route.signed || route.json ? await readBody(req, route.maxBodyBytes ?? maxBodyBytes) : Buffer.alloc(0);
    if (route.signed) {
      // req.url is the target as received, path and query byte for byte: what the app signed.
      const check = verifySignature({ header: req.headers[SIGNATURE_HEADER], method: req.method, target: req.url, rawBody });
      if (!check.ok) {
        logger.warn({ path, reason: check.reason }, 'rejected request signature');
        return errorResponse(401, 'unauthorized', 'missing, invalid or expired X-Bridge-Signature');
      }
    }
    const body = route.json ? parseJsonObject(rawBody) : undefined;
    return route.handler({ body, query: url.searchParams, params });
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
