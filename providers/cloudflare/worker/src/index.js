// The moodle-offload Worker (docs/cloudflare.md): `POST /enqueue` puts signed batch messages on
// the jobs queue, `GET /health` answers for `moodle-offload check`, and the queue consumer
// delivers each batch and reports to the sidecar.

import { handleQueue, settingsOf } from "./consumer.js";
import { MAX_MESSAGE_BYTES, MAX_SEND_BYTES, MAX_SEND_MESSAGES, errorResponse, handleEnqueue } from "./enqueue.js";
import { SENDERS } from "./senders.js";
import { VERSION } from "./version.js";

export { DeliveryLedger } from "./ledger.js";

/**
 * What is wrong with the Worker's setup, each naming what to fix (empty when ready).
 * @param {Record<string, any>} env
 */
export function problems(env) {
  const found = [];
  if (!env.CALLBACK_SECRET) found.push("CALLBACK_SECRET is not set: `wrangler secret put CALLBACK_SECRET`");
  const sender = env.EMAIL_SENDER || "binding";
  if (!SENDERS.includes(sender)) found.push(`EMAIL_SENDER: expected one of ${SENDERS.join(", ")}`);
  if (sender === "binding" && !env.EMAIL) found.push("EMAIL_SENDER is \"binding\": add the EMAIL send_email binding");
  if ((sender === "resend" || sender === "sendgrid") && !env.EMAIL_API_KEY) {
    found.push(`EMAIL_SENDER is "${sender}": \`wrangler secret put EMAIL_API_KEY\``);
  }
  const mode = env.REPORT_MODE || "http";
  if (mode !== "http" && mode !== "queue") found.push("REPORT_MODE: expected http or queue");
  if (mode === "queue" && !env.RESULTS) found.push("REPORT_MODE is \"queue\": add the RESULTS queue producer binding");
  if (!env.JOBS) found.push("no JOBS queue producer binding");
  if (!env.LEDGER) found.push("no LEDGER Durable Object binding");
  if (!env.CERTS) found.push("no CERTS R2 bucket binding");
  try {
    settingsOf(env);
  } catch (err) {
    found.push(/** @type {Error} */ (err).message);
  }
  return found;
}

/**
 * @param {Record<string, any>} env
 */
function health(env) {
  const found = problems(env);
  return Response.json(
    {
      status: found.length ? "misconfigured" : "ok",
      version: VERSION,
      email_sender: env.EMAIL_SENDER || "binding",
      report_mode: env.REPORT_MODE || "http",
      problems: found,
      limits: { max_message_bytes: MAX_MESSAGE_BYTES, max_send_messages: MAX_SEND_MESSAGES,
        max_send_bytes: MAX_SEND_BYTES },
    },
    { status: found.length ? 503 : 200 },
  );
}

export default {
  /**
   * @param {Request} request
   * @param {Record<string, any>} env
   */
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/enqueue") {
      if (request.method !== "POST") return errorResponse(405, "POST only");
      return handleEnqueue(request, /** @type {any} */ (env));
    }
    if (pathname === "/health") {
      if (request.method !== "GET" && request.method !== "HEAD") return errorResponse(405, "GET only");
      return health(env);
    }
    return errorResponse(404, "not found: POST /enqueue, GET /health");
  },

  /**
   * @param {MessageBatch<unknown>} batch
   * @param {Record<string, any>} env
   */
  async queue(batch, env) {
    await handleQueue(batch, env);
  },
};
