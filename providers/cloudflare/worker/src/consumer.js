// The queue consumer: each message is one batch (or part of one); per recipient, claim in the
// idempotency record (ledger.js) → send → record the outcome; then report, then ack.
//
// A message is acked only when every recipient in it has an outcome recorded and reported.
// It is retried (`message.retry({delaySeconds})`) when the email service throttles or fails
// with a 5xx (what was sent is recorded and reported, the rest is released and sent on the
// redelivery), when another live invocation holds a claim, or when the report did not
// reach the sidecar (the redelivery reports again from the records, sending nothing). A
// body that is not a batch message is retried until the queue moves it to the dead-letter
// queue (max_retries). A redelivered message never sends to a recipient recorded `sent`,
// and a claim whose invocation died before recording its outcome is reported as an unknown
// outcome, not resent in that round (the sidecar's `jobs retry` starts a new round).

import { MessageError, describe, parseBatch } from "./batch.js";
import { FAILED, MAX_KEYS, SENDING, SENT } from "./ledger.js";
import { report } from "./report.js";
import { Backoff, DEFAULT_BACKOFF, Refused, Unknown, makeSender } from "./senders.js";

export const UNKNOWN_OUTCOME =
  "delivery outcome unknown: the worker stopped during the send; not resent to avoid a duplicate " +
  "(jobs retry sends it again)";
export const LOST_ANSWER =
  "delivery outcome unknown: the email service may have taken the email but its answer was lost " +
  "({}); not resent to avoid a duplicate (jobs retry sends it again)";
const MAX_ERROR = 1000;

/**
 * @typedef {import("./batch.js").Batch} Batch
 * @typedef {import("./batch.js").Recipient} Recipient
 * @typedef {import("./ledger.js").LedgerRecord} LedgerRecord
 * @typedef {import("./report.js").Update} Update
 * @typedef {import("./senders.js").Email} Email
 */

/**
 * @typedef {object} Settings
 * @property {number} claimChunk
 * @property {number} leaseMs
 * @property {number} ttlMs
 * @property {number} ratePerSecond
 */

/**
 * The consumer's settings from its vars; throws naming the var.
 * @param {Record<string, any>} env
 * @returns {Settings}
 */
export function settingsOf(env) {
  /**
   * @param {string} name
   * @param {number} fallback
   * @param {number} min
   * @param {number} max
   */
  const number = (name, fallback, min, max) => {
    const raw = env[name];
    const value = raw === undefined || raw === "" ? fallback : Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new Error(`${name}: expected a number from ${min} to ${max}`);
    }
    return value;
  };
  return {
    claimChunk: Math.floor(number("CLAIM_CHUNK", 10, 1, MAX_KEYS)),
    leaseMs: number("CLAIM_LEASE_SECONDS", 900, 1, 86400) * 1000,
    ttlMs: number("RECORD_TTL_DAYS", 14, 1, 365) * 86400 * 1000,
    ratePerSecond: number("EMAIL_RATE_PER_SECOND", 0, 0, 10000),
  };
}

/**
 * Spaces the sends of one invocation to `rate` a second (0: no spacing).
 * @param {number} rate
 */
function pacer(rate) {
  let next = 0;
  return async () => {
    if (!rate) return;
    const now = Date.now();
    const at = Math.max(now, next);
    next = at + 1000 / rate;
    if (at > now) await new Promise((resolve) => setTimeout(resolve, at - now));
  };
}

/**
 * @param {MessageBatch<unknown>} batch
 * @param {Record<string, any>} env
 */
export async function handleQueue(batch, env) {
  let settings;
  let send;
  try {
    settings = settingsOf(env);
    send = makeSender(env);
  } catch (err) {
    console.error(`queue ${batch.queue}: the Worker is misconfigured: ${/** @type {Error} */ (err).message}; ` +
      `${batch.messages.length} messages retried in ${DEFAULT_BACKOFF * 10} s`);
    batch.retryAll({ delaySeconds: DEFAULT_BACKOFF * 10 });
    return;
  }
  const pace = pacer(settings.ratePerSecond);
  /** @type {number | null} */
  let throttled = null;
  for (const message of batch.messages) {
    if (throttled !== null) {
      // the email service said to wait: the rest of this batch waits with it, untried
      message.retry({ delaySeconds: throttled });
      continue;
    }
    try {
      throttled = await processMessage(message, env, settings, send, pace);
    } catch (err) {
      // the loop boundary: one message's failure must not lose the others
      console.error(`queue message ${message.id}: unexpected error; retried: ${/** @type {Error} */ (err).stack || err}`);
      message.retry({ delaySeconds: DEFAULT_BACKOFF });
    }
  }
}

/**
 * @param {Message<unknown>} message
 * @param {Record<string, any>} env
 * @param {Settings} settings
 * @param {(email: Email) => Promise<string>} send
 * @param {() => Promise<void>} pace
 * @returns {Promise<number | null>} seconds the email service asked to wait (throttled), or null
 */
async function processMessage(message, env, settings, send, pace) {
  /** @type {Batch} */
  let b;
  try {
    b = await parseBatch(message.body);
  } catch (err) {
    if (!(err instanceof MessageError)) throw err;
    console.error(`queue message ${message.id}: not a valid batch message (${err.message}); retried at ` +
      `once, it reaches the dead-letter queue after max_retries (delivery ${message.attempts})`);
    message.retry({ delaySeconds: 0 });
    return null;
  }
  const where = `${describe(b)} (queue message ${message.id}, delivery ${message.attempts})`;
  const owner = `${message.id}:${crypto.randomUUID()}`;
  const ledger = env.LEDGER.get(env.LEDGER.idFromName(b.batch_id));
  /** @type {Update[]} */
  const updates = [];
  /** @type {number | null} seconds the email service asked to wait */
  let delay = null;
  /** @type {number | null} seconds until the last live claim of another invocation ends */
  let busy = null;
  let replayed = 0;
  let sentNow = 0;
  /** @type {string | null} */
  let firstError = null;
  const seen = new Set();
  const recipients = b.recipients.filter((r) => !seen.has(r.userid) && seen.add(r.userid));

  for (let start = 0; start < recipients.length && delay === null; start += settings.claimChunk) {
    const chunk = recipients.slice(start, start + settings.claimChunk);
    const byId = new Map(chunk.map((r) => [r.userid, r]));
    /** @type {import("./ledger.js").Claim[]} */
    const claims = await ledger.claim(chunk.map((r) => r.userid), b.attempt, owner, settings.leaseMs, settings.ttlMs);
    /** @type {{userid: number, record: LedgerRecord}[]} */
    const outcomes = [];
    // claimed for this invocation and not sent (yet): released when the chunk ends
    const unsent = new Set(claims.filter((c) => c.action === "send").map((c) => c.userid));
    try {
      for (const claim of claims) {
        if (claim.action === "busy") {
          // retried once that claim is settled (then reported from it) or ran out (unknown)
          const left = Math.ceil(((claim.lease_until ?? 0) - Date.now()) / 1000) + 1;
          busy = Math.max(busy ?? 1, Math.min(left, 12 * 3600));
        } else if (claim.action === "replay" && claim.record) {
          updates.push(fromRecord(claim.userid, claim.record));
          replayed++;
        } else if (claim.action === "send" && delay === null) {
          const r = /** @type {Recipient} */ (byId.get(claim.userid));
          await pace();
          // from here the email may go out: a crash leaves the claim (reported unknown)
          unsent.delete(r.userid);
          try {
            const { externalId, certificateKey } = await deliver(env, b, r, send);
            const record = { state: SENT, round: b.attempt, external_id: externalId,
              certificate_key: certificateKey, timesent: Math.floor(Date.now() / 1000) };
            outcomes.push({ userid: r.userid, record });
            updates.push(fromRecord(r.userid, record));
            sentNow++;
          } catch (err) {
            const reason = String(/** @type {Error} */ (err).message).slice(0, MAX_ERROR);
            // logs carry no address: a refusal's code only (its reason goes to the sidecar)
            firstError = firstError || (err instanceof Refused ? err.code : reason);
            if (err instanceof Backoff) {
              console.warn(`${where}: userid ${r.userid}: ${reason}; retried in ${err.delaySeconds} s`);
              delay = err.delaySeconds;
              unsent.add(r.userid); // not sent, or safe to send again (Resend's key): released
            } else if (err instanceof Refused) {
              const record = { state: FAILED, round: b.attempt, error_message: reason, attempts: b.attempt + 1 };
              outcomes.push({ userid: r.userid, record });
              updates.push(fromRecord(r.userid, record));
            } else if (err instanceof Unknown) {
              console.warn(`${where}: userid ${r.userid}: ${reason}; not sent again`);
              outcomes.push({ userid: r.userid, record: { state: SENDING, round: b.attempt, owner, lease_until: 0 } });
              updates.push(failed(r.userid, LOST_ANSWER.replace("{}", reason), b.attempt + 1));
            } else {
              throw err; // its claim stays: reported unknown once the lease ends
            }
          }
        }
      }
    } finally {
      // If this write fails the sends stay claimed: the redelivery reports them unknown
      // once the lease ends, and sends none of them again.
      if (outcomes.length) await ledger.settle(owner, outcomes);
      if (unsent.size) await ledger.release(owner, [...unsent]);
    }
  }

  const throttled = delay;
  try {
    await report(env, b, updates);
  } catch (err) {
    console.warn(`${where}: report not delivered (${/** @type {Error} */ (err).message}); retried, ` +
      "the redelivery reports again without sending");
    delay = delay ?? DEFAULT_BACKOFF;
  }
  const failedNow = updates.length - replayed - sentNow;
  const retry = delay !== null || busy !== null;
  const wait = Math.max(delay ?? 0, busy ?? 0);
  console.log(`${where}: ${sentNow} sent, ${failedNow} failed, ${replayed} reported from earlier deliveries` +
    (firstError ? `; first error: ${firstError}` : "") +
    (busy !== null ? "; another invocation holds some claims" : "") +
    (retry ? `; retried in ${wait} s` : ""));
  if (retry) message.retry({ delaySeconds: wait });
  else message.ack();
  return throttled;
}

/**
 * Send one recipient's email and/or check its certificate; the ids to record.
 * @param {Record<string, any>} env
 * @param {Batch} b
 * @param {Recipient} r
 * @param {(email: Email) => Promise<string>} send
 * @returns {Promise<{externalId: string | null, certificateKey: string | null}>}
 */
async function deliver(env, b, r, send) {
  /** @type {{filename: string, content: ArrayBuffer}[]} */
  const attachments = [];
  const key = r.certificate_key;
  if (b.certificate && key) {
    // the sidecar stored the PDF before it queued the batch
    let object;
    try {
      object = b.attach_certificate ? await env.CERTS.get(key) : await env.CERTS.head(key);
    } catch (err) {
      throw new Backoff(`R2: ${/** @type {Error} */ (err).message}`, DEFAULT_BACKOFF);
    }
    if (object === null) throw new Refused(`certificate PDF not found in R2 at ${key}`, "certificate not in R2");
    if (b.attach_certificate) {
      attachments.push({ filename: "certificate.pdf", content: await object.arrayBuffer() });
    }
  }
  if (!b.send_email) return { externalId: null, certificateKey: key };
  /** @type {Record<string, string>} */
  const headers = {};
  if (r.unsubscribe_url) {
    headers["List-Unsubscribe"] = `<${r.unsubscribe_url}>`;
    headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click";
  }
  const externalId = await send({
    from: /** @type {string} */ (b.from),
    reply_to: b.reply_to,
    to: r.email,
    subject: r.subject,
    html: r.html,
    text: r.text,
    headers,
    attachments,
    idempotency_key: `${b.batch_id}/${r.userid}/${b.attempt}`,
  });
  return { externalId: externalId || null, certificateKey: key };
}

/**
 * The report entry for a recipient from its record.
 * @param {number} userid
 * @param {LedgerRecord} record
 * @returns {Update}
 */
function fromRecord(userid, record) {
  if (record.state === SENT) {
    /** @type {Update} */
    const update = { userid, status: SENT };
    if (record.external_id) update.external_id = record.external_id;
    if (record.certificate_key) update.certificate_key = record.certificate_key;
    if (record.timesent !== undefined) update.timesent = record.timesent;
    return update;
  }
  if (record.state === FAILED) {
    return failed(userid, record.error_message || "failed", record.attempts ?? record.round + 1);
  }
  return failed(userid, UNKNOWN_OUTCOME, record.round + 1);
}

/**
 * @param {number} userid
 * @param {string} error
 * @param {number} attempts
 * @returns {Update}
 */
function failed(userid, error, attempts) {
  return { userid, status: FAILED, error_message: error, attempts };
}
