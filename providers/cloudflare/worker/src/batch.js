// One queue message as the consumer reads it: an `offload.batch.v1` message (docs/job-message.md),
// maybe in a gzip+base64 envelope, validated whole before anything is sent. Errors name the
// field path, never a value (values may be email addresses).

export const BATCH_SCHEMA = "offload.batch.v1";
export const ENVELOPE_SCHEMA = "offload.envelope.v1";
export const ENVELOPE_ENCODING = "gzip+base64";
/** a decoded envelope may not inflate past this (a gzip bomb guard, as providers/message.py) */
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const URL_RE = /^https?:\/\/[!-~]{1,2000}$/;

export class MessageError extends Error {}

/**
 * @typedef {object} Recipient
 * @property {number} userid
 * @property {string} email
 * @property {string} subject
 * @property {string} html
 * @property {string} text
 * @property {string | null} certificate_key  R2 key of the PDF the sidecar stored
 * @property {string | null} unsubscribe_url
 */

/**
 * @typedef {object} Batch
 * @property {string} job_id
 * @property {string} batch_id
 * @property {number} attempt      the sidecar's delivery round (a higher one resends what is not sent)
 * @property {boolean} send_email
 * @property {boolean} certificate
 * @property {string | null} from
 * @property {string | null} reply_to
 * @property {boolean} attach_certificate
 * @property {string | null} callback_url
 * @property {string} callback_mode
 * @property {number | null} part
 * @property {number | null} part_count
 * @property {Recipient[]} recipients
 */

/**
 * The JSON object in a queue body, unwrapping a gzip+base64 envelope.
 * @param {unknown} body
 * @returns {Promise<Record<string, any>>}
 */
export async function decodeBody(body) {
  let obj = body;
  if (typeof obj === "string") obj = parseJson(obj, "body");
  if (!isObject(obj)) throw new MessageError("body: expected a JSON object");
  if (obj.schema !== ENVELOPE_SCHEMA) return obj;
  if (obj.encoding !== ENVELOPE_ENCODING) {
    throw new MessageError(`envelope.encoding: expected ${JSON.stringify(ENVELOPE_ENCODING)}`);
  }
  if (typeof obj.data !== "string") throw new MessageError("envelope.data: expected a base64 string");
  let compressed;
  try {
    compressed = Uint8Array.from(atob(obj.data), (c) => c.charCodeAt(0));
  } catch {
    throw new MessageError("envelope.data: invalid base64");
  }
  const plain = await gunzip(compressed);
  const inner = parseJson(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(plain), "envelope.data");
  if (!isObject(inner)) throw new MessageError("envelope.data: expected a JSON object");
  if (inner.schema === ENVELOPE_SCHEMA) {
    throw new MessageError("envelope.data: holds another envelope; nesting is not allowed");
  }
  return inner;
}

/** @param {Uint8Array} data */
async function gunzip(data) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("gzip"));
  const reader = stream.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_DECODED_BYTES) {
        throw new MessageError(`envelope.data: decompresses to over ${MAX_DECODED_BYTES} bytes`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof MessageError) throw err;
    throw new MessageError("envelope.data: invalid gzip");
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * @param {string} text
 * @param {string} what
 */
function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new MessageError(`${what}: invalid JSON`);
  }
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, any>}
 */
function isObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The batch in one queue message body; throws MessageError naming the field.
 * @param {unknown} body
 * @returns {Promise<Batch>}
 */
export async function parseBatch(body) {
  const obj = await decodeBody(body);
  if (obj.schema !== BATCH_SCHEMA) throw new MessageError(`schema: expected ${JSON.stringify(BATCH_SCHEMA)}`);
  const actions = section(obj, "actions");
  const sendEmail = flag(actions, "actions", "email");
  const certificate = flag(actions, "actions", "certificate");
  if (!sendEmail && !certificate) throw new MessageError("actions: neither email nor certificate is asked for");
  const email = sendEmail ? section(obj, "email") : {};
  const cert = certificate ? section(obj, "certificate") : {};
  const callback = section(obj, "callback");
  // where reports go is the Worker's REPORT_MODE; the message only gives the URL for "http"
  const mode = callback.mode ?? "http";
  if (typeof mode !== "string") throw new MessageError("callback.mode: expected a string");
  const callbackUrl = optionalText(callback, "callback", "url");
  if (callbackUrl !== null && !URL_RE.test(callbackUrl)) {
    throw new MessageError("callback.url: expected an http:// or https:// URL");
  }
  const attempt = obj.attempt ?? 0;
  if (!Number.isInteger(attempt) || attempt < 0) throw new MessageError("attempt: expected a non-negative integer");
  const items = obj.recipients;
  if (!Array.isArray(items) || items.length === 0) throw new MessageError("recipients: expected a non-empty list");
  const part = obj.part ?? null;
  const partCount = obj.part_count ?? null;
  if (part !== null && (!Number.isInteger(part) || !Number.isInteger(partCount))) {
    throw new MessageError("part, part_count: expected integers");
  }
  const keyPrefix = certificate ? optionalText(cert, "certificate", "key_prefix") ?? "" : "";
  return {
    job_id: uuid(obj, "job_id"),
    batch_id: uuid(obj, "batch_id"),
    attempt,
    send_email: sendEmail,
    certificate,
    from: sendEmail ? text(email, "email", "from") : null,
    reply_to: sendEmail ? optionalText(email, "email", "reply_to") : null,
    attach_certificate: sendEmail ? flag(email, "email", "attach_certificate") : false,
    callback_url: callbackUrl,
    callback_mode: mode,
    part,
    part_count: partCount,
    recipients: items.map((item, i) => recipient(i, item, sendEmail, certificate, keyPrefix)),
  };
}

/**
 * @param {number} index
 * @param {unknown} item
 * @param {boolean} sendEmail
 * @param {boolean} certificate
 * @param {string} keyPrefix
 * @returns {Recipient}
 */
function recipient(index, item, sendEmail, certificate, keyPrefix) {
  const path = `recipients[${index}]`;
  if (!isObject(item)) throw new MessageError(`${path}: expected an object`);
  const userid = item.userid;
  if (!Number.isInteger(userid) || userid <= 0) throw new MessageError(`${path}.userid: expected a positive integer`);
  /** @type {Record<string, string>} */
  const fields = {};
  for (const key of ["subject", "html", "text"]) {
    const value = item[key] ?? "";
    if (typeof value !== "string") throw new MessageError(`${path}.${key}: expected a string`);
    fields[key] = value;
  }
  if (sendEmail && !fields.html && !fields.text) throw new MessageError(`${path}: neither html nor text`);
  const unsubscribe = item.unsubscribe_url ?? null;
  if (unsubscribe !== null && (typeof unsubscribe !== "string" || !URL_RE.test(unsubscribe) || /[<>]/.test(unsubscribe))) {
    throw new MessageError(`${path}.unsubscribe_url: expected an http(s) URL or null`);
  }
  let certificateKey = optionalText(item, path, "certificate_key");
  if (certificate && certificateKey === null) certificateKey = `${keyPrefix}${userid}.pdf`;
  return {
    userid,
    email: sendEmail ? text(item, path, "email") : String(item.email ?? ""),
    subject: fields.subject,
    html: fields.html,
    text: fields.text,
    certificate_key: certificate ? certificateKey : null,
    unsubscribe_url: unsubscribe,
  };
}

/**
 * @param {Record<string, any>} obj
 * @param {string} key
 * @returns {Record<string, any>}
 */
function section(obj, key) {
  const value = obj[key];
  if (!isObject(value)) throw new MessageError(`${key}: expected an object`);
  return value;
}

/**
 * @param {Record<string, any>} obj
 * @param {string} path
 * @param {string} key
 */
function flag(obj, path, key) {
  const value = obj[key] ?? false;
  if (typeof value !== "boolean") throw new MessageError(`${path}.${key}: expected true or false`);
  return value;
}

/**
 * @param {Record<string, any>} obj
 * @param {string} path
 * @param {string} key
 * @returns {string}
 */
function text(obj, path, key) {
  const value = obj[key];
  if (typeof value !== "string" || !value.trim()) throw new MessageError(`${path}.${key}: expected a non-empty string`);
  return value;
}

/**
 * @param {Record<string, any>} obj
 * @param {string} path
 * @param {string} key
 * @returns {string | null}
 */
function optionalText(obj, path, key) {
  const value = obj[key];
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") throw new MessageError(`${path}.${key}: expected a string or null`);
  return value;
}

/**
 * @param {Record<string, any>} obj
 * @param {string} key
 */
function uuid(obj, key) {
  const value = obj[key];
  if (typeof value !== "string" || !UUID.test(value)) throw new MessageError(`${key}: expected a UUID string`);
  return value.toLowerCase();
}

/**
 * `batch <id>` plus `part i/n` of a split batch, for log lines.
 * @param {Batch} batch
 */
export function describe(batch) {
  if (batch.part === null || batch.part_count === null) return `batch ${batch.batch_id}`;
  return `batch ${batch.batch_id} part ${batch.part + 1}/${batch.part_count}`;
}
