"""What a job says was erased from it, for `jobs show`, the dashboard's job page and the
API's job (docs/privacy.md).

Retention (sidecar.privacy.erase_job) records on the job when (`job.erased_at`) and what
(`job.erased`): JSON `{"what": [...], "why": "..."}`. Ledgers written before hold a
sentence instead ("addresses, names, variables and the addresses in errors of its
recipients (why)"); `read` takes both. `purge-user` records nothing on the job: a recipient
it erased has a negative user id (sidecar.privacy.purge_user), and `purged` counts them.
"""

import json
from collections.abc import Sequence
from datetime import datetime

from sidecar.db.models import Recipient

#: what retention erases from each recipient of a job; the rows stay, with status,
#: attempts, times and Moodle user id, so the counts do not change
ERASED_ITEMS = ("addresses", "names", "variables", "addresses in errors")
#: what the ledger held before the JSON form: f"{_SENTENCE}{why})"
_SENTENCE = "addresses, names, variables and the addresses in errors of its recipients ("


def record(why: str) -> str:
    """`job.erased` for a retention run: what it erased, and why."""
    return json.dumps({"what": list(ERASED_ITEMS), "why": why}, separators=(",", ":"))


def read(erased_at: datetime | None, erased: str | None) -> dict | None:
    """{"at", "what": [...], "why"} from a job's two columns, or None (nothing erased)."""
    if erased_at is None:
        return None
    text = erased or ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        what = data.get("what")
        what = [str(w) for w in what] if isinstance(what, list) else []
        return {"at": erased_at, "what": what, "why": str(data.get("why") or "")}
    if text.startswith(_SENTENCE) and text.endswith(")"):
        return {"at": erased_at, "what": list(ERASED_ITEMS), "why": text[len(_SENTENCE) : -1]}
    return {"at": erased_at, "what": [text] if text else [], "why": ""}


def words(items: Sequence[str]) -> str:
    """ "addresses, names and variables"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sentence(e: dict) -> str:
    """One line for a terminal: what, of whom, and why."""
    why = f" ({e['why']})" if e["why"] else ""
    return f"{words(e['what'])} of its recipients{why}; counts kept"


def purged(job_id: str) -> int:
    """The job's recipients erased by `purge-user`."""
    return Recipient.select().where(Recipient.job == job_id, Recipient.userid < 0).count()
