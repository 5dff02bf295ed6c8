"""The bulk tools from the dashboard's Send page and `POST /api/v1/send/{tool}`, with the
CLI's preview and confirm: `send reengagement`, `certificates issue`, `send license` and
`send welcome`.

Both ways in take the same fields (form fields, or a JSON object), checked here once,
and go through the very preview and commit the CLI uses (sidecar.tools,
sidecar.licensemail, sidecar.welcome), under the same idempotency keys: a tool run twice,
from the CLI, the page or the API, mails nobody twice.

What makes a web preview safe to confirm later:
- `normalise` turns what the admin typed into what it meant at preview time: "24h"
  becomes the instant it named, the re-engagement key its day, a reissue its timestamp.
  The confirm form (or the API client) sends those fields back, so a confirm pressed
  twice, or an hour later, commits the same thing under the same key.
- The confirm carries `expected`, the number the preview said it would send; the commit
  previews again and refuses (409, showing the new preview) when that number changed,
  so nobody is mailed who was not on the preview the admin confirmed.

Who may: a site administrator runs any tool; a company manager runs re-engagement,
certificates and licence emails for their own companies only (the company is then
required); welcome emails set passwords in Moodle, so they are for site administrators.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sidecar import licensemail, tools, welcome
from sidecar.access import Principal
from sidecar.db import store
from sidecar.errors import Aborted
from sidecar.runs import accounting
from sidecar.web.errors import BadRequest, ConflictError, Forbidden

KINDS = ("reengagement", "certificates", "license", "welcome")
TITLES = {
    "reengagement": "Re-engagement",
    "certificates": "Certificates",
    "license": "Licence emails",
    "welcome": "Welcome emails",
}
ADMIN_ONLY = frozenset({"welcome"})
FIELDS = {  # what each tool takes (the API refuses others)
    "reengagement": {"course", "inactive_days", "exclude_completed", "company", "key"},
    "certificates": {"course", "users", "reissue", "reissue_at", "company"},
    "license": {"since", "license", "company"},
    "welcome": {"since", "users", "company"},
}
MAX_KEY = 100
MAX_IDS = 5000
_YES = {"on", "true", "1", "yes"}
_STAMP = "%Y-%m-%dT%H:%M:%S"


@dataclass
class View:
    """A tool's preview as the page and the API show it."""

    kind: str
    title: str
    fields: dict[str, str]  # what the confirm sends back (normalised)
    to_send: int
    facts: list[tuple[str, str]]
    left_out: list[tuple[str, int]]  # reason, how many
    route: str
    route_reason: str
    sample: object | None = None  # a RenderedEmail
    sample_note: str = ""
    refused: list[str] = field(default_factory=list)  # listed users not served, and why
    notes: list[str] = field(default_factory=list)
    counts: dict | None = None  # a course tool's run counts (the schedule dry run's)
    handle: object = field(default=None, repr=False)  # the preview the commit takes

    def json(self) -> dict:
        sample = self.sample
        return {
            "tool": self.kind,
            "fields": self.fields,
            "to_send": self.to_send,
            "expected": self.to_send,
            "facts": dict(self.facts),
            "left_out": dict(self.left_out),
            "counts": self.counts,
            "refused": self.refused,
            "notes": self.notes,
            "route": self.route,
            "route_reason": self.route_reason,
            "sample": None if sample is None
            else {"subject": sample.subject, "text": sample.text,
                  "html": getattr(sample, "html", None)},
        }  # fmt: skip


def allowed(principal: Principal, kind: str) -> bool:
    return principal.is_admin or (kind not in ADMIN_ONLY and bool(principal.companies))


# --- fields -----------------------------------------------------------------------------


def _text(form: Mapping, name: str) -> str:
    value = form.get(name)
    if value is None or isinstance(value, bool):
        return "true" if value else ""
    return str(value).strip()


def _flag(form: Mapping, name: str) -> bool:
    value = form.get(name)
    return value is True or _text(form, name).lower() in _YES


def _int(form: Mapping, name: str, *, required: bool = False, least: int = 1) -> int:
    text = _text(form, name)
    if not text:
        if required:
            raise BadRequest(f"{name}: required")
        return 0
    if not text.isdigit() or int(text) < least:
        raise BadRequest(f"{name}: a whole number of at least {least}, got {text[:40]!r}")
    return int(text)


def _ids(form: Mapping, name: str) -> tuple[int, ...]:
    """User ids separated by commas, spaces or new lines (a JSON list too)."""
    value = form.get(name)
    parts = value if isinstance(value, list) else _text(form, name).replace(",", " ").split()
    ids = []
    for part in parts:
        text = str(part).strip()
        if not text.isdigit() or int(text) < 1:
            raise BadRequest(f"{name}: user ids are whole numbers, got {text[:40]!r}")
        ids.append(int(text))
    if len(ids) > MAX_IDS:
        raise BadRequest(f"{name}: at most {MAX_IDS} user ids")
    return tuple(dict.fromkeys(ids))


def _since(form: Mapping, now: datetime, *, required: bool) -> datetime | None:
    text = _text(form, "since")
    if not text:
        if required:
            raise BadRequest("since: required (a duration such as 24h, or a date)")
        return None
    try:
        return licensemail.parse_since(text, now)
    except ValueError as exc:
        raise BadRequest(f"since: {exc}") from None


def _stamp(form: Mapping, name: str) -> datetime | None:
    text = _text(form, name)
    if not text:
        return None
    try:
        return datetime.strptime(text, _STAMP)
    except ValueError:
        raise BadRequest(f"{name}: a time as {_STAMP}, got {text[:40]!r}") from None


def _company(form: Mapping, principal: Principal) -> int:
    """The company asked for: any for an admin; one of theirs, required, for a manager."""
    companyid = _int(form, "company")
    if principal.is_admin:
        return companyid
    if not companyid:
        raise BadRequest("company: required (you manage " + _theirs(principal) + ")")
    if companyid not in principal.companies:
        raise Forbidden(f"company {companyid} is not one you manage ({_theirs(principal)})")
    return companyid


def _theirs(principal: Principal) -> str:
    return "companies " + ", ".join(str(c) for c in principal.companies)


def normalise(kind: str, form: Mapping, principal: Principal, now: datetime) -> dict[str, str]:
    """The tool's fields as meant at `now` (see the module's doc); BadRequest naming the
    field that is wrong, Forbidden when the principal may not run the tool or company."""
    if kind not in KINDS:
        raise BadRequest(f"no such tool {kind[:40]!r}: one of {', '.join(KINDS)}")
    if not allowed(principal, kind):
        raise Forbidden(
            "only a site administrator may send welcome emails (they set passwords)"
            if kind in ADMIN_ONLY else "only a site administrator or a company manager "
            "may run this tool"
        )  # fmt: skip
    company = _company(form, principal)
    out: dict[str, str] = {"company": str(company) if company else ""}
    if kind == "reengagement":
        course = _int(form, "course", required=True)
        days = _int(form, "inactive_days", required=True)
        key = _text(form, "key") or tools.reengagement_key(course, days, now)
        if len(key) > MAX_KEY:
            raise BadRequest(f"key: at most {MAX_KEY} characters")
        exclude = "true" if _flag(form, "exclude_completed") else ""
        out.update(course=str(course), inactive_days=str(days), key=key, exclude_completed=exclude)
    elif kind == "certificates":
        out["course"] = str(_int(form, "course", required=True))
        out["users"] = ",".join(str(i) for i in _ids(form, "users"))
        if _flag(form, "reissue"):
            at = _stamp(form, "reissue_at") or now.replace(microsecond=0)
            out["reissue"], out["reissue_at"] = "true", at.strftime(_STAMP)
    elif kind == "license":
        out["since"] = _since(form, now, required=True).strftime(_STAMP)
        out["license"] = str(_int(form, "license") or "")
    else:  # welcome
        users = _ids(form, "users")
        since = _since(form, now, required=not users)
        if users and since:
            raise BadRequest("give either since or users, not both")
        out["since"] = since.strftime(_STAMP) if since else ""
        out["users"] = ",".join(str(i) for i in users)
    return out


# --- preview and commit -----------------------------------------------------------------


def _num(fields: Mapping, name: str) -> int:
    return int(fields.get(name) or 0)


def preview(rt, kind: str, fields: Mapping[str, str]) -> View:
    """What the tool would send now, sending nothing (MoodleError, SidecarError raised)."""
    return _PREVIEWS[kind](rt, fields)


def _course_tool(rt, fields: Mapping[str, str]):
    now = rt.clock()
    course, company = _num(fields, "course"), _num(fields, "company")
    if "inactive_days" in fields:
        return tools.reengagement(
            course, _num(fields, "inactive_days"), now=now, companyid=company,
            exclude_completed=bool(fields.get("exclude_completed")), key=fields["key"],
        )  # fmt: skip
    at = fields.get("reissue_at")
    tool = tools.certificates(
        course, now=datetime.strptime(at, _STAMP) if at else now, companyid=company,
        userids=[int(u) for u in (fields.get("users") or "").split(",") if u],
        reissue=bool(fields.get("reissue")),
    )  # fmt: skip
    return tool


def _preview_course(rt, fields: Mapping[str, str], kind: str) -> View:
    tool = _course_tool(rt, fields)
    pv = tools.preview(rt, tool)
    out = pv.outcome
    c = out.counts
    facts = [("Recipients", str(out.recipients)), ("Counts", accounting(c))]
    if pv.already_sent:
        facts.append(("Already sent", f"{pv.already_sent} under key {tool.key}: skipped"))
    facts += [("Key", tool.key), ("Moodle requests", str(c.get("moodle_requests", "")))]
    return View(
        kind, tool.title, dict(fields), max(pv.to_send, 0), facts, [], out.route.route,
        out.route.reason, out.sample, refused=pv.refused, counts=c, handle=pv,
    )  # fmt: skip


def _preview_license(rt, fields: Mapping[str, str]) -> View:
    since = datetime.strptime(fields["since"], _STAMP)
    options = licensemail.Options(since, _num(fields, "company"), _num(fields, "license"))
    pv = licensemail.preview(rt, options)
    facts = [("Allocations found", str(pv.found)), ("Since", f"{since:%Y-%m-%d %H:%M} UTC")]
    notes = []
    for plan in pv.plans:
        name = f" {plan.name!r}" if plan.name else ""
        lic = ", ".join(f"{lid} {lname!r} ({n})" for lid, lname, n in plan.by_license())
        notes.append(
            f"company {plan.companyid}{name}: {plan.recipients} emails; licences {lic}; "
            f"template {plan.template}.html; from {plan.sender} ({plan.sender_from}); "
            f"route {plan.route.route}: {plan.route.reason}"
        )
    routes = sorted({p.route.route for p in pv.plans})
    return View(
        "license", "licence-allocation emails", dict(fields), pv.to_send, facts,
        sorted(pv.excluded.items()), "/".join(routes) or "-",
        "by company, below" if pv.plans else "nothing to route", pv.sample,
        sample_note=f"company {pv.sample_company}" if pv.sample else "", notes=notes, handle=pv,
    )  # fmt: skip


def _preview_welcome(rt, fields: Mapping[str, str]) -> View:
    from sidecar.moodle import open_client

    if rt.config.moodle is None:
        raise Aborted("welcome emails need [moodle] (url and token) in the config")
    since = datetime.strptime(fields["since"], _STAMP) if fields.get("since") else None
    source = welcome.Source(
        since=since, since_text=f"{since:%Y-%m-%d %H:%M} UTC" if since else "",
        companyid=_num(fields, "company") or None,
        userids=tuple(int(u) for u in (fields.get("users") or "").split(",") if u),
    )  # fmt: skip
    client = open_client(rt.config)
    try:
        pv = welcome.preview(rt.config, client, rt.renderer, source, rt.clock())
    finally:
        client.close()
    facts = [
        ("Source", source.label()),
        ("With a temporary password", str(pv.with_password)),
        ("Without (single sign-on)", str(pv.without_password)),
        ("Moodle requests", str(pv.requests)),
    ]
    left = [(why, len(ids)) for why, ids in sorted(pv.excluded.items())]
    route, _, reason = pv.route_reason.partition(": ")
    return View(
        "welcome", "welcome emails", dict(fields), len(pv.recipients), facts, left, route,
        reason, pv.sample, sample_note="the password is made when the email is sent",
        notes=list(pv.notes), handle=pv,
    )  # fmt: skip


_PREVIEWS = {
    "reengagement": lambda rt, f: _preview_course(rt, f, "reengagement"),
    "certificates": lambda rt, f: _preview_course(rt, f, "certificates"),
    "license": _preview_license,
    "welcome": _preview_welcome,
}


def expected_of(form: Mapping) -> int | None:
    text = _text(form, "expected")
    if not text:
        return None
    if not text.isdigit():
        raise BadRequest(f"expected: the preview's to_send, a whole number, got {text[:40]!r}")
    return int(text)


def commit(rt, view: View, expected: int | None, by: dict) -> list[str]:
    """Commit the previewed tool; its job ids. ConflictError when the preview no longer
    says `expected` (what the admin confirmed), or there is nothing to send."""
    if expected is not None and view.to_send != expected:
        raise ConflictError(
            f"the preview changed since you saw it: {view.to_send} to send now, not "
            f"{expected}; nothing was sent: look again and confirm"
        )
    if view.to_send <= 0:
        raise ConflictError("nothing to send: every recipient was sent already or left out")
    now = rt.clock()
    if view.kind in ("reengagement", "certificates"):
        job_ids = list(tools.commit(rt, view.handle).jobs)
    elif view.kind == "license":
        job_ids = [job.job_id for _, job in licensemail.commit(rt, view.handle)]
    else:
        from sidecar.temppasswords import Sealer

        Sealer.from_config(rt.config)  # no job that could never be delivered
        created = welcome.commit(
            view.handle, batch_size=rt.config.offload.job_batch_size,
            sender=rt.config.providers.local.from_, now=now,
        )  # fmt: skip
        job_ids = [created.job_id]
    said = {k: v for k, v in view.fields.items() if v and k != "users"}
    if view.fields.get("users"):
        said["users"] = view.fields["users"].count(",") + 1
    with store.atomic():
        for job_id in job_ids:
            store.audit("tool_send", now, job_id, tool=view.kind, to_send=view.to_send,
                        **said, **by)  # fmt: skip
    return job_ids
