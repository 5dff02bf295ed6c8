"""core_message_send_instant_messages (message/externallib.php).

Failures are entries with msgid -1, not exceptions. When a batch mixes sent and failed
messages, Moodle's post-processing reads a message record for the failed entry too; PHP
only warns about the missing record, so that entry also gets `text` '' , a null
`conversationid` and `useridfrom` (the sandbox reproduces those extra keys).
"""

from html import escape
from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import MoodleException

MESSAGE_MAX_LENGTH = 4096
FORMATS = (0, 1, 2, 4)


def _format(text: str, fmt: int) -> str:
    if fmt in (1, 4):
        return text
    if fmt == 2:
        text = escape(text, quote=False)
    return f'<div class="text_to_html">{text.replace(chr(10), "<br />")}</div>'


def _validate_format(fmt: Any) -> int:
    if fmt not in FORMATS:
        raise MoodleException(
            "formatnotsupported",
            "webservice/formatnotsupported",
            module="webservice",
            debuginfo=f"The format with value={fmt} is not supported by this Moodle site",
        )
    return fmt


def send_instant_messages(call: Call, messages: list[dict]) -> list[dict]:
    """core_message_send_instant_messages: one result per message, msgid -1 on failure."""
    site = call.site
    if not site.messaging:
        raise MoodleException("disabled", "Messaging is disabled on this site", module="message")
    call.require_capability("moodle/site:sendmessage")
    candelete = call.has_capability("moodle/site:deleteanymessage")
    results: list[dict[str, Any]] = []
    sent: dict[int, dict] = {}
    for message in messages:
        result: dict[str, Any] = {}
        error = None
        target = site.users.get(message["touserid"])
        if target is None or target.deleted:
            error = (
                f"You cannot send a message to a user ID ({message['touserid']}) "
                "that doesn't exist."
            )
        elif len(message["text"]) > MESSAGE_MAX_LENGTH:
            error = "The message is longer than the maximum allowed."
        elif target.preferences.get("message_blocknoncontacts") == "1":
            error = (
                "You can't message this user due to their message preferences. "
                "Try adding them as a contact."
            )
        msgid = 0
        if error is None:
            fmt = _validate_format(message["textformat"])
            msgid = _post(call, target.id, message["text"], fmt)
        if "clientmsgid" in message:
            result["clientmsgid"] = message["clientmsgid"]
        if msgid:
            result.update(msgid=msgid, timecreated=call.now, candeletemessagesforallusers=candelete)
            sent[msgid] = site.messages[-1]
        else:
            result["msgid"] = -1
            result["errormessage"] = error
        results.append(result)
    if sent:
        for result in results:
            record = sent.get(result["msgid"])
            result["conversationid"] = record["conversationid"] if record else None
            result["useridfrom"] = call.user.id
            result["text"] = _format(record["text"], record["format"]) if record else ""
    return results


def _post(call: Call, touserid: int, text: str, fmt: int) -> int:
    site = call.site
    pair = frozenset((call.user.id, touserid))
    conversation = site.conversations.get(pair)
    if conversation is None:
        conversation = site.conversations[pair] = site.new_id("conversation")
    msgid = site.new_id("message")
    site.messages.append(
        {
            "id": msgid,
            "useridfrom": call.user.id,
            "useridto": touserid,
            "text": text,
            "format": fmt,
            "timecreated": call.now,
            "conversationid": conversation,
        }
    )
    return msgid
