"""A job for some participants of a course pulled from Moodle.

The learners' names and addresses are the ones Moodle gave at this pull; a participant
whose address the token's user may not see cannot be mailed and is counted, not guessed.
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sidecar import jobs
from sidecar.moodle import PulledCourse, course_vars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CourseJob:
    created: jobs.Created
    no_email: int  # participants Moodle returned without an address


def create_course_job(
    pulled: PulledCourse,
    userids: Iterable[int],
    *,
    type: str,
    template_id: str,
    wwwroot: str,
    key: str,
    sender: str,
    batch_size: int,
    now: datetime,
    certificate: bool = False,
    extra: Mapping[str, object] | None = None,
    **job_fields,
) -> CourseJob:
    """Commit a job for `userids` of the pulled course; nothing is sent here.

    `job_fields` go to the JobSpec as they are (route, route_reason, schedule_id, run_id,
    tenant_id)."""
    wanted = set(userids)
    recipients, no_email = [], 0
    for u in pulled.learners:
        if u.id not in wanted:
            continue
        # Stripped as the selection and the ledger's lists read it: one rule for an address.
        email = (u.email or "").strip()
        if not email:
            no_email += 1
            continue
        recipients.append(jobs.RecipientIn(u.id, email, u.firstname or "", u.lastname or ""))
    spec = jobs.JobSpec(
        type=type,
        template_id=template_id,
        source=f"moodle:course:{pulled.course.id}",
        actions=jobs.Actions(email=True, certificate=certificate),
        idempotency_key=key,
        courseid=pulled.course.id,
        sender=sender,
        template_data={"course": course_vars(pulled.course, wwwroot), **(extra or {})},
        **job_fields,
    )
    created = jobs.create_job(spec, recipients, batch_size=batch_size, now=now)
    if no_email:
        log.warning(
            "job %s: %d participants of course %d have no visible email address",
            created.job_id, no_email, pulled.course.id,
        )  # fmt: skip
    return CourseJob(created, no_email)
