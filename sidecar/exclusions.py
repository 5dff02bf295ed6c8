"""The ledger's lists of learners not to mail, read for a schedule run: the one place.

Each list is a reason of `schedules.selection` (`suppressed`: the addresses that bounced
or drew a complaint). The selection tries them in this order, after the address checks,
so the dry run counts them and the run never mails them. Another list (an opt-out per
kind of mail, say) is one more entry of the dict `ledger_exclusions` returns.
"""

from collections.abc import Callable, Iterable

from schedules.model import Schedule
from schedules.selection import SUPPRESSED, Learner
from sidecar.suppression import suppressed_among
from sidecar.unsubscribe import kind_of, opted_out


def ledger_exclusions(
    schedule: Schedule, learners: Iterable[Learner], check_email: Callable[[str], str]
) -> dict[str, set[int]]:
    """{reason: user ids} of the learners the ledger's lists hold, in the order to try.

    Addresses are looked up as `check_email` normalizes them, as the job ledger stores
    them; an address it refuses is on no list (the selection counts it as invalid).
    """
    by_address: dict[str, list[int]] = {}
    for learner in learners:
        address = (learner.email or "").strip()
        if not address:
            continue
        try:
            normal = check_email(address)
        except ValueError:
            continue
        by_address.setdefault(normal, []).append(learner.userid)
    bounced = suppressed_among(by_address)
    return {
        SUPPRESSED: {uid for address in bounced for uid in by_address[address]},
    }


def opted_out_of(job_type: str, learners: Iterable[Learner]) -> set[int]:
    """The learners who unsubscribed from the kind of mail a job of `job_type` sends."""
    return opted_out((learner.userid for learner in learners), kind_of(job_type))
