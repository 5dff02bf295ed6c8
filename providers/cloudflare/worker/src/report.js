// Reports to the sidecar: `offload.callback.v1` bodies (docs/callback.md), signed with
// CALLBACK_SECRET, POSTed to the batch's callback URL or sent onto the RESULTS queue.

import { sign } from "./signing.js";

export const CALLBACK_SCHEMA = "offload.callback.v1";
/** a Cloudflare queue message is at most 128 KB with about 100 B of metadata */
export const MAX_QUEUE_MESSAGE_BYTES = 127_900;
/** a report (its signed queue message, or its HTTP body) stays within this */
export const MAX_REPORT_BYTES = 120_000;
const encoder = new TextEncoder();

export class ReportUndelivered extends Error {}

/**
 * @typedef {Record<string, string | number | null>} Update  one recipient_updates entry
 */

/**
 * @param {string} jobId
 * @param {string} batchId
 * @param {Update[]} updates
 */
export function callbackBody(jobId, batchId, updates) {
  return JSON.stringify({
    schema: CALLBACK_SCHEMA,
    callback_id: crypto.randomUUID(),
    job_id: jobId,
    batch_id: batchId,
    recipient_updates: updates,
    timestamp: Math.floor(Date.now() / 1000),
  });
}

/**
 * The message that carries a report on the results queue: the body as a string (the exact
 * signed bytes) and its signature, since Cloudflare queue messages have no attributes.
 * @param {string} body
 * @param {string} signature
 */
export function queueMessage(body, signature) {
  return JSON.stringify({ signature, body });
}

/**
 * Report bodies for `updates`, split in halves until each fits `limit` once wrapped by `wrap`.
 * @param {string} jobId
 * @param {string} batchId
 * @param {Update[]} updates
 * @param {(body: string) => number} sizeOf bytes the body takes on the wire
 * @returns {string[]}
 */
export function reportBodies(jobId, batchId, updates, sizeOf) {
  const body = callbackBody(jobId, batchId, updates);
  if (sizeOf(body) <= MAX_REPORT_BYTES || updates.length === 1) return [body];
  const mid = Math.floor(updates.length / 2);
  return [
    ...reportBodies(jobId, batchId, updates.slice(0, mid), sizeOf),
    ...reportBodies(jobId, batchId, updates.slice(mid), sizeOf),
  ];
}

/**
 * @typedef {object} ReportEnv
 * @property {string} [REPORT_MODE]
 * @property {string} [CALLBACK_SECRET]
 * @property {Queue} [RESULTS]
 */

/**
 * Deliver the reports of one batch message; throws ReportUndelivered (then the queue
 * message is retried, and its redelivery reports again from the records, sending nothing).
 * @param {ReportEnv} env
 * @param {{job_id: string, batch_id: string, callback_url: string | null}} batch
 * @param {Update[]} updates
 * @returns {Promise<number>} how many reports were sent
 */
export async function report(env, batch, updates) {
  if (!updates.length) return 0;
  const secret = env.CALLBACK_SECRET;
  if (!secret) throw new ReportUndelivered("CALLBACK_SECRET is not set: `wrangler secret put CALLBACK_SECRET`");
  const mode = env.REPORT_MODE || "http";
  if (mode === "queue") {
    const queue = env.RESULTS;
    if (!queue) throw new ReportUndelivered("REPORT_MODE is \"queue\" but the Worker has no RESULTS queue binding");
    // a signature is 64 hex characters; the wrapper escapes the body's quotes and backslashes
    const sizeOf = (/** @type {string} */ body) => encoder.encode(queueMessage(body, "0".repeat(64))).byteLength;
    const bodies = reportBodies(batch.job_id, batch.batch_id, updates, sizeOf);
    for (const body of bodies) {
      const message = queueMessage(body, await sign(secret, body));
      if (encoder.encode(message).byteLength > MAX_QUEUE_MESSAGE_BYTES) {
        throw new ReportUndelivered("one recipient's update does not fit a queue message");
      }
      try {
        await queue.send(JSON.parse(message), { contentType: "json" });
      } catch (err) {
        throw new ReportUndelivered(`results queue: ${/** @type {Error} */ (err).message}`);
      }
    }
    return bodies.length;
  }
  const url = batch.callback_url;
  if (!url) throw new ReportUndelivered("REPORT_MODE is \"http\" but the batch message has no callback.url");
  const bodies = reportBodies(batch.job_id, batch.batch_id, updates, (b) => encoder.encode(b).byteLength);
  for (const body of bodies) await postCallback(url, body, await sign(secret, body));
  return bodies.length;
}

/**
 * POST one signed body; 2xx and 409 (that callback_id was already applied) are delivered.
 * Redirects are not followed: a redirected POST must not look delivered.
 * @param {string} url
 * @param {string} body
 * @param {string} signature
 */
async function postCallback(url, body, signature) {
  let resp;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-signature": signature },
      body,
      redirect: "manual",
    });
  } catch (err) {
    throw new ReportUndelivered(`callback URL unreachable: ${/** @type {Error} */ (err).message}`);
  }
  await resp.body?.cancel();
  if (!resp.ok && resp.status !== 409) throw new ReportUndelivered(`callback URL answered HTTP ${resp.status}`);
}
