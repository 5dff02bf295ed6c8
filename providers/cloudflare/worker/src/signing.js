// HMAC-SHA256 signatures, hex, as providers/signing.py makes and checks them
// (docs/callback.md: `X-Signature: hex(HMAC-SHA256(secret, raw body))`).

const encoder = new TextEncoder();
const HEX = /^[0-9a-f]{64}$/;

/** @param {string} secret */
async function importKey(secret) {
  return crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

/** @param {ArrayBuffer} buffer */
function toHex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Hex HMAC-SHA256 of `body` under `secret`; throws for an empty secret.
 * @param {string} secret
 * @param {Uint8Array | string} body the exact bytes sent
 * @returns {Promise<string>}
 */
export async function sign(secret, body) {
  if (!secret) throw new Error("empty signing secret: set CALLBACK_SECRET");
  const data = typeof body === "string" ? encoder.encode(body) : body;
  return toHex(await crypto.subtle.sign("HMAC", await importKey(secret), data));
}

/**
 * The lower-case hex digest in a header (an optional `sha256=` prefix allowed), or null.
 * @param {string | null} header
 */
export function normalize(header) {
  if (!header) return null;
  let sig = header.trim();
  if (sig.slice(0, 7).toLowerCase() === "sha256=") sig = sig.slice(7).trim();
  sig = sig.toLowerCase();
  return HEX.test(sig) ? sig : null;
}

/**
 * Equal strings of the same length, compared in time independent of where they differ.
 * @param {string} a
 * @param {string} b
 */
function sameText(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  if (x.byteLength !== y.byteLength) return false;
  const subtle = /** @type {SubtleCrypto & {timingSafeEqual?: (a: ArrayBufferView, b: ArrayBufferView) => boolean}} */ (
    crypto.subtle
  );
  if (typeof subtle.timingSafeEqual === "function") return subtle.timingSafeEqual(x, y);
  let diff = 0;
  for (let i = 0; i < x.byteLength; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

/**
 * True when `header` is the HMAC of `body` under any of `secrets` (empty ones never
 * match). Every secret is tried, no early exit, so the timing tells nothing of which.
 * @param {string[]} secrets
 * @param {Uint8Array} body
 * @param {string | null} header
 */
export async function verify(secrets, body, header) {
  const wanted = normalize(header);
  if (wanted === null) return false;
  let matched = false;
  for (const secret of secrets) {
    if (!secret) continue;
    matched = sameText(await sign(secret, body), wanted) || matched;
  }
  return matched;
}
