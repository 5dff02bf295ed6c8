// Sending one email: the `send_email` binding (Cloudflare Email Service) or an HTTP email API
// (Resend, SendGrid), chosen by the EMAIL_SENDER var. Each sender answers with the message id,
// or throws one of three errors that decide what the consumer does next:
// - Backoff: nothing was sent (throttled, 5xx, or a retry that the API's idempotency key makes
//   safe); the claim is released and the queue message retried after `delaySeconds`.
// - Refused: a hard failure (4xx but 429): reported failed, never retried in this round.
// - Unknown: the service may have taken the email but its answer was lost (a network
//   error with no idempotency key): reported as an unknown outcome, never resent in this round.

export class Backoff extends Error {
  /**
   * @param {string} message
   * @param {number} delaySeconds
   */
  constructor(message, delaySeconds) {
    super(message);
    this.delaySeconds = delaySeconds;
  }
}
export class Refused extends Error {
  /**
   * @param {string} message  reported to the sidecar (it may name the address)
   * @param {string} code  for the Worker's log: never an address
   */
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}
export class Unknown extends Error {}

export const SENDERS = ["binding", "resend", "sendgrid"];
const DEFAULT_URLS = { resend: "https://api.resend.com", sendgrid: "https://api.sendgrid.com" };
/** seconds to wait after a 5xx or a 429 with no Retry-After */
export const DEFAULT_BACKOFF = 30;
const MAX_ERROR = 1000;

/**
 * @typedef {object} Email
 * @property {string} from
 * @property {string | null} reply_to
 * @property {string} to
 * @property {string} subject
 * @property {string} html
 * @property {string} text
 * @property {Record<string, string>} headers
 * @property {{filename: string, content: ArrayBuffer}[]} attachments
 * @property {string} idempotency_key  batch_id/userid/round
 */

/**
 * @typedef {object} SenderEnv
 * @property {string} [EMAIL_SENDER]
 * @property {string} [EMAIL_API_URL]
 * @property {string} [EMAIL_API_KEY]
 * @property {{send: (message: any) => Promise<{messageId: string}>}} [EMAIL]
 */

/**
 * The sender the env asks for; throws naming the var when it is wrong.
 * @param {SenderEnv} env
 * @returns {(email: Email) => Promise<string>} sends, answers the message id
 */
export function makeSender(env) {
  const kind = env.EMAIL_SENDER || "binding";
  if (kind === "binding") {
    if (!env.EMAIL) throw new Error("EMAIL_SENDER is \"binding\" but the Worker has no EMAIL send_email binding");
    const binding = env.EMAIL;
    return (email) => sendBinding(binding, email);
  }
  if (kind !== "resend" && kind !== "sendgrid") {
    throw new Error(`EMAIL_SENDER: expected one of ${SENDERS.join(", ")}`);
  }
  if (!env.EMAIL_API_KEY) throw new Error(`EMAIL_SENDER is "${kind}": set the secret with \`wrangler secret put EMAIL_API_KEY\``);
  const base = (env.EMAIL_API_URL || DEFAULT_URLS[kind]).replace(/\/+$/, "");
  const key = env.EMAIL_API_KEY;
  return kind === "resend" ? (email) => sendResend(base, key, email) : (email) => sendSendgrid(base, key, email);
}

const NAMED = /^\s*"?([^"<]*?)"?\s*<([^<>\s]+@[^<>\s]+)>\s*$/;

/**
 * `Name <addr@example.org>` (or a bare address) as {email, name?}.
 * @param {string} address
 * @returns {{email: string, name?: string}}
 */
export function parseAddress(address) {
  const m = NAMED.exec(address);
  if (!m) return { email: address.trim() };
  return m[1] ? { email: m[2], name: m[1] } : { email: m[2] };
}

/** @param {ArrayBuffer} buffer */
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * @param {{send: (message: any) => Promise<{messageId: string}>}} binding
 * @param {Email} email
 */
async function sendBinding(binding, email) {
  /** @type {Record<string, any>} */
  const message = { from: parseAddress(email.from), to: email.to, subject: email.subject };
  if (email.html) message.html = email.html;
  if (email.text) message.text = email.text;
  if (email.reply_to) message.replyTo = parseAddress(email.reply_to);
  if (Object.keys(email.headers).length) message.headers = email.headers;
  if (email.attachments.length) {
    message.attachments = email.attachments.map((a) => ({
      content: a.content, filename: a.filename, type: "application/pdf", disposition: "attachment",
    }));
  }
  try {
    const result = await binding.send(message);
    return result.messageId;
  } catch (err) {
    const reason = String(/** @type {Error} */ (err).message || err).slice(0, MAX_ERROR);
    // The binding throws before sending: a rate or quota limit is worth waiting for,
    // anything else (a sender or address not allowed, a bad message) is not.
    if (/rate|limit|quota|too many|temporar|unavailable|timeout|internal/i.test(reason)) {
      throw new Backoff(`Email Service: ${reason}`, DEFAULT_BACKOFF);
    }
    throw new Refused(`Email Service refused the email: ${reason}`, "Email Service refused");
  }
}

/**
 * @param {string} base
 * @param {string} key
 * @param {Email} email
 */
async function sendResend(base, key, email) {
  /** @type {Record<string, any>} */
  const body = { from: email.from, to: [email.to], subject: email.subject };
  if (email.html) body.html = email.html;
  if (email.text) body.text = email.text;
  if (email.reply_to) body.reply_to = email.reply_to;
  if (Object.keys(email.headers).length) body.headers = email.headers;
  if (email.attachments.length) {
    body.attachments = email.attachments.map((a) => ({ filename: a.filename, content: base64(a.content) }));
  }
  // Resend keeps the key 24 h: a retry after a lost answer cannot send twice within that
  const resp = await post(`${base}/emails`, key, body, { "Idempotency-Key": email.idempotency_key }, "Resend", true);
  const id = (await resp.json().catch(() => ({}))).id;
  return typeof id === "string" ? id : "";
}

/**
 * @param {string} base
 * @param {string} key
 * @param {Email} email
 */
async function sendSendgrid(base, key, email) {
  /** @type {Record<string, any>} */
  const body = {
    personalizations: [{ to: [{ email: email.to }] }],
    from: parseAddress(email.from),
    subject: email.subject,
    content: [
      ...(email.text ? [{ type: "text/plain", value: email.text }] : []),
      ...(email.html ? [{ type: "text/html", value: email.html }] : []),
    ],
  };
  if (email.reply_to) body.reply_to = parseAddress(email.reply_to);
  if (Object.keys(email.headers).length) body.headers = email.headers;
  if (email.attachments.length) {
    body.attachments = email.attachments.map((a) => ({
      content: base64(a.content), filename: a.filename, type: "application/pdf", disposition: "attachment",
    }));
  }
  const resp = await post(`${base}/v3/mail/send`, key, body, {}, "SendGrid", false);
  await resp.body?.cancel();
  return resp.headers.get("x-message-id") || "";
}

/**
 * POST JSON; the 2xx response, or Backoff / Refused / Unknown.
 * @param {string} url
 * @param {string} key
 * @param {object} body
 * @param {Record<string, string>} headers
 * @param {string} service
 * @param {boolean} idempotent a resend after a lost answer is safe
 */
async function post(url, key, body, headers, service, idempotent) {
  let resp;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
      redirect: "manual",
    });
  } catch (err) {
    const reason = String(/** @type {Error} */ (err).message || err).slice(0, 200);
    if (idempotent) throw new Backoff(`${service} unreachable: ${reason}`, DEFAULT_BACKOFF);
    throw new Unknown(`${service} answer lost: ${reason}`);
  }
  if (resp.ok) return resp;
  const detail = (await resp.text().catch(() => "")).slice(0, 300);
  if (resp.status === 429 || resp.status >= 500) {
    throw new Backoff(`${service} answered HTTP ${resp.status}`, retryAfter(resp.headers.get("retry-after")));
  }
  throw new Refused(`${service} refused the email: HTTP ${resp.status}: ${detail}`.slice(0, MAX_ERROR),
    `${service} HTTP ${resp.status}`);
}

/**
 * Seconds to wait from a Retry-After header (seconds or an HTTP date), 1 to 12 h.
 * @param {string | null} header
 */
export function retryAfter(header) {
  if (!header) return DEFAULT_BACKOFF;
  let seconds = Number(header);
  if (!Number.isFinite(seconds)) seconds = (Date.parse(header) - Date.now()) / 1000;
  if (!Number.isFinite(seconds)) return DEFAULT_BACKOFF;
  return Math.min(Math.max(Math.ceil(seconds), 1), 12 * 3600);
}
