// The idempotency record: one Durable Object per batch_id, one stored record per userid.
//
// A Durable Object runs one request at a time and its storage is strongly consistent, so a
// claim (read the records, write `sending` for the ones to send) is atomic without
// conditions. Record, stored under `u:{userid}`:
//
// | field           | meaning                                                          |
// |-----------------|------------------------------------------------------------------|
// | state           | "sending" (claimed, outcome unknown until settled), "sent", "failed" |
// | round           | the batch message's `attempt` (the sidecar's delivery round)     |
// | owner           | the consumer invocation holding a "sending" claim                |
// | lease_until     | epoch ms until which that invocation may still be sending        |
// | external_id     | sent: the email service's message id                             |
// | certificate_key | sent: the R2 key of the certificate                              |
// | timesent        | sent: epoch seconds                                              |
// | error_message   | failed: the reason reported                                      |
// | attempts        | failed: rounds tried (round + 1)                                 |
//
// A recipient is sent when it has no record, or a record of an earlier round that is not
// "sent". Within one round it is tried at most once: a "sending" claim whose lease ran
// out (its invocation died between the send and the record) is reported as an unknown
// outcome and never sent again in that round. The whole object is deleted by an alarm
// RECORD_TTL_DAYS after its first claim.

import { DurableObject } from "cloudflare:workers";

export const SENDING = "sending";
export const SENT = "sent";
export const FAILED = "failed";
/** Durable Object storage reads and writes at most this many keys at once */
export const MAX_KEYS = 128;

/**
 * @typedef {object} LedgerRecord
 * @property {string} state
 * @property {number} round
 * @property {string} [owner]
 * @property {number} [lease_until]
 * @property {string | null} [external_id]
 * @property {string | null} [certificate_key]
 * @property {number} [timesent]
 * @property {string} [error_message]
 * @property {number} [attempts]
 */

/**
 * @typedef {object} Claim
 * @property {number} userid
 * @property {"send" | "replay" | "busy"} action  send it; report it from `record`; or another
 *   live invocation holds it
 * @property {LedgerRecord} [record]
 * @property {number} [lease_until] busy: epoch ms when the other invocation's claim ends
 */

/** @param {number} userid */
const keyOf = (userid) => `u:${userid}`;

export class DeliveryLedger extends DurableObject {
  /**
   * Claim `userids` for `owner` in `round`; what to do with each.
   * @param {number[]} userids at most MAX_KEYS
   * @param {number} round
   * @param {string} owner
   * @param {number} leaseMs
   * @param {number} ttlMs
   * @returns {Promise<Claim[]>}
   */
  async claim(userids, round, owner, leaseMs, ttlMs) {
    if (userids.length > MAX_KEYS) throw new Error(`claim: over ${MAX_KEYS} userids`);
    const now = Date.now();
    /** @type {Map<string, LedgerRecord>} */
    const found = await this.ctx.storage.get(userids.map(keyOf));
    /** @type {Record<string, LedgerRecord>} */
    const claims = {};
    /** @type {Claim[]} */
    const result = [];
    for (const userid of userids) {
      const old = found.get(keyOf(userid));
      if (old === undefined || (old.state !== SENT && old.round < round)) {
        claims[keyOf(userid)] = { state: SENDING, round, owner, lease_until: now + leaseMs };
        result.push({ userid, action: "send" });
      } else if (old.state === SENDING && (old.lease_until ?? 0) > now) {
        result.push({ userid, action: "busy", lease_until: old.lease_until });
      } else {
        result.push({ userid, action: "replay", record: old });
      }
    }
    if (Object.keys(claims).length) {
      await this.ctx.storage.put(claims);
      if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(now + ttlMs);
    }
    return result;
  }

  /**
   * Write the outcomes of `owner`'s claims: "sent", "failed", or "sending" with lease 0
   * (the email service may have taken it: reported unknown, not sent again this round).
   * A "sent" outcome is always written; others only over `owner`'s own claim.
   * @param {string} owner
   * @param {{userid: number, record: LedgerRecord}[]} outcomes at most MAX_KEYS
   */
  async settle(owner, outcomes) {
    /** @type {Map<string, LedgerRecord>} */
    const found = await this.ctx.storage.get(outcomes.map((o) => keyOf(o.userid)));
    /** @type {Record<string, LedgerRecord>} */
    const puts = {};
    for (const { userid, record } of outcomes) {
      const old = found.get(keyOf(userid));
      if (record.state === SENT || (old && old.state === SENDING && old.owner === owner)) {
        puts[keyOf(userid)] = record;
      }
    }
    if (Object.keys(puts).length) await this.ctx.storage.put(puts);
  }

  /**
   * Drop `owner`'s claims on `userids` that were never sent (throttled before the send).
   * @param {string} owner
   * @param {number[]} userids at most MAX_KEYS
   */
  async release(owner, userids) {
    /** @type {Map<string, LedgerRecord>} */
    const found = await this.ctx.storage.get(userids.map(keyOf));
    const drop = [];
    for (const [key, old] of found) {
      if (old.state === SENDING && old.owner === owner) drop.push(key);
    }
    if (drop.length) await this.ctx.storage.delete(drop);
  }

  async alarm() {
    await this.ctx.storage.deleteAll();
  }
}
