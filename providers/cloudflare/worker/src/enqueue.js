// POST /enqueue: the sidecar's way into the jobs queue when it uses the Worker's route.
//
// Request: `X-Signature: hex(HMAC-SHA256(CALLBACK_SECRET, raw body))` (the callback scheme,
// docs/callback.md) over the JSON body
//   {"schema": "offload.enqueue.v1", "timestamp": <Unix seconds>, "messages": [<message>, ...]}
// where each message is one `offload.batch.v1` object or its `offload.envelope.v1` wrapper,
// at most MAX_MESSAGE_BYTES as compact JSON. Nothing is enqueued unless the signature
// verifies (401), the timestamp is within MAX_SKEW_SECONDS of the Worker's clock (401) and
// every message is one the consumer would deliver (400 naming the message and field; 413
// for one over the size limit). The answer comes once every `sendBatch` resolved,
// that is once the queue has written the messages:
//   200 {"enqueued": n, "sends": k}
// A queue error part way answers 503 (429 when throttled) with {"error", "status",
// "enqueued": n}: messages[0:n] are in the queue, the rest are not.

import { MessageError, parseBatch } from "./batch.js";
import { verify } from "./signing.js";

export const ENQUEUE_SCHEMA = "offload.enqueue.v1";
/** a queue message is at most 128 KB (1 KB = 1,000 B), about 100 B of it metadata */
export const MAX_MESSAGE_BYTES = 127_900;
/** `sendBatch` takes at most 100 messages and 256 KB */
export const MAX_SEND_MESSAGES = 100;
export const MAX_SEND_BYTES = 256_000;
/** what one message counts against a sendBatch beyond its body (metadata) */
const PER_MESSAGE_OVERHEAD = 100;
/** a request body is refused past this (Workers accept 100 MB on paid plans) */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
const encoder = new TextEncoder();

/**
 * @typedef {object} EnqueueEnv
 * @property {Queue} JOBS
 * @property {string} [CALLBACK_SECRET]
 * @property {string} [CALLBACK_SECRET_PREVIOUS]
 * @property {string} [MAX_SKEW_SECONDS]
 */

/**
 * @param {number} status
 * @param {string} error
 * @param {Record<string, unknown>} [extra]
 */
export function errorResponse(status, error, extra = {}) {
  return Response.json({ error, status, ...extra }, { status });
}

/**
 * Split messages into sendBatch calls: ≤100 messages and ≤256 KB each, order kept.
 * @param {number[]} sizes bytes of each message's JSON
 * @returns {[number, number][]} [start, end) ranges
 */
export function planSends(sizes) {
  /** @type {[number, number][]} */
  const ranges = [];
  let start = 0;
  let bytes = 0;
  sizes.forEach((size, i) => {
    const cost = size + PER_MESSAGE_OVERHEAD;
    if (i > start && (i - start >= MAX_SEND_MESSAGES || bytes + cost > MAX_SEND_BYTES)) {
      ranges.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += cost;
  });
  if (start < sizes.length) ranges.push([start, sizes.length]);
  return ranges;
}

/**
 * @param {Request} request
 * @param {EnqueueEnv} env
 */
export async function handleEnqueue(request, env) {
  const secrets = [env.CALLBACK_SECRET || "", env.CALLBACK_SECRET_PREVIOUS || ""];
  if (!env.CALLBACK_SECRET) {
    return errorResponse(503, "the Worker has no CALLBACK_SECRET: `wrangler secret put CALLBACK_SECRET`");
  }
  const length = Number(request.headers.get("content-length") || "0");
  if (length > MAX_REQUEST_BYTES) return errorResponse(413, `request body over ${MAX_REQUEST_BYTES} bytes`);
  const raw = new Uint8Array(await request.arrayBuffer());
  if (raw.byteLength > MAX_REQUEST_BYTES) return errorResponse(413, `request body over ${MAX_REQUEST_BYTES} bytes`);
  if (!(await verify(secrets, raw, request.headers.get("x-signature")))) {
    return errorResponse(401, "missing or wrong X-Signature");
  }
  let obj;
  try {
    obj = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(raw));
  } catch {
    return errorResponse(400, "body: invalid JSON");
  }
  if (typeof obj !== "object" || obj === null || obj.schema !== ENQUEUE_SCHEMA) {
    return errorResponse(400, `schema: expected ${JSON.stringify(ENQUEUE_SCHEMA)}`);
  }
  if (!Number.isInteger(obj.timestamp)) return errorResponse(400, "timestamp: expected an integer (Unix seconds)");
  const skew = Number(env.MAX_SKEW_SECONDS || "300");
  if (Math.abs(Date.now() / 1000 - obj.timestamp) > skew) {
    return errorResponse(401, `timestamp: more than ${skew} s from the Worker's clock`);
  }
  const messages = obj.messages;
  if (!Array.isArray(messages) || !messages.length) return errorResponse(400, "messages: expected a non-empty list");
  /** @type {number[]} */
  const sizes = [];
  for (const [i, m] of messages.entries()) {
    const size = encoder.encode(JSON.stringify(m)).byteLength;
    if (size > MAX_MESSAGE_BYTES) {
      return errorResponse(413, `messages[${i}]: ${size} bytes, over the queue's ${MAX_MESSAGE_BYTES}`);
    }
    // the consumer's own checks: a message it would refuse never enters the queue
    try {
      await parseBatch(m);
    } catch (err) {
      if (!(err instanceof MessageError)) throw err;
      return errorResponse(400, `messages[${i}]: ${err.message}`);
    }
    sizes.push(size);
  }
  const sends = planSends(sizes);
  let enqueued = 0;
  for (const [start, end] of sends) {
    try {
      await env.JOBS.sendBatch(messages.slice(start, end).map((body) => ({ body, contentType: "json" })));
    } catch (err) {
      const reason = String(/** @type {Error} */ (err).message || err);
      const throttled = /too many requests/i.test(reason);
      console.warn(`enqueue: queue refused messages ${start}-${end - 1}: ${reason}`);
      const resp = errorResponse(throttled ? 429 : 503, `queue: ${reason}`, { enqueued });
      if (throttled) resp.headers.set("retry-after", "1");
      return resp;
    }
    enqueued = end;
  }
  return Response.json({ enqueued, sends: sends.length });
}
