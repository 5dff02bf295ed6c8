"""What one recipient's email and certificate say: the one place both routes render them.

Local delivery renders here right before sending; cloud submission renders here and the
worker only delivers (docs/job-message.md). Both give a learner the same words and links.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from providers.local.pdf import qr_png_data_uri
from sidecar import certificates
from sidecar.db.models import Job, Recipient
from sidecar.render import RenderedEmail, Renderer, learner_vars
from sidecar.unsubscribe import Links, kind_of

#: a site's own unsubscribe link that can go in List-Unsubscribe: http(s) or mailto,
#: printable ASCII without spaces or angle brackets, well inside a header line
_SITE_LINK = re.compile(r"(?:https?://|mailto:)[!-;=?-~]{1,900}", re.IGNORECASE)


@dataclass(frozen=True)
class Composed:
    email: RenderedEmail
    headers: dict[str, str]
    unsubscribe_url: str | None = None  # the one-click link the headers point at


class Composer:
    def __init__(
        self,
        renderer: Renderer,
        public_url: str,
        clock: Callable[[], datetime],
        links: Links | None = None,
    ):
        self.renderer = renderer
        self.public_url = public_url
        self.clock = clock
        self.links = links  # None: no unsubscribe links (off, or not configured)

    def context(self, job: Job, r: Recipient) -> dict:
        """The template variables of one recipient (job data, learner, CSV columns, today)."""
        ctx = dict(job.template_data or {})
        ctx.update(learner_vars(r.userid, r.email, r.firstname, r.lastname))
        ctx.update(r.vars or {})
        ctx.pop("_welcome", None)  # a welcome's password state: never a template variable
        ctx.setdefault("today", self.clock().date().isoformat())
        return ctx

    def certificate_html(self, job: Job, r: Recipient, issued: certificates.Issued) -> str:
        """The whole certificate document; raises TemplateError."""
        ctx = self.context(job, r)
        link, verify = certificates.urls(self.public_url, issued.code)
        ctx.setdefault("course", {"fullname": "", "shortname": "", "url": ""})
        ctx.setdefault("company", {"name": ""})
        ctx.setdefault("issued_date", self.clock().strftime("%d %B %Y"))
        ctx["verification"] = {"code": issued.code, "url": verify, "qr": qr_png_data_uri(verify)}
        ctx["certificate_url"] = link
        return self.renderer.render_certificate(job.certificate_template_id or "certificate", ctx)

    def email(
        self,
        job: Job,
        r: Recipient,
        issued: certificates.Issued | None = None,
        extra: dict | None = None,
    ) -> Composed:
        """Subject, bodies and bulk-mail headers; raises TemplateError.

        Mail a learner may opt out of (reminders, re-engagement, CSV) gets the one-click
        unsubscribe headers (RFC 8058) and `unsubscribe_url` for the footer; other mail
        (certificates, account mail) gets neither, whatever the job's variables say.
        Without our links (off, or not configured), a site's own `unsubscribe_url` (a job
        variable or CSV column) that is an http(s) or mailto URL goes in List-Unsubscribe,
        without List-Unsubscribe-Post: we cannot promise that it takes a one-click POST.
        """
        ctx = self.context(job, r)
        ctx.update(extra or {})  # e.g. a temporary password, opened for this email only
        if issued is not None:
            ctx["certificate_url"] = certificates.urls(self.public_url, issued.code)[0]
        kind = kind_of(job.type, bool(job.actions.get("certificate")))
        url = self.links.url(r.userid, kind) if self.links and kind else None
        if url or kind is None:
            ctx["unsubscribe_url"] = url or ""
        else:
            ctx.setdefault("unsubscribe_url", "")  # a link of the site's own, given as a variable
        email = self.renderer.render_email(job.template_id, ctx, job.tenant_id)
        headers = {"Precedence": "bulk", "X-Offload-Job": job.id}
        if url:
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        elif kind is not None and (own := site_link(ctx["unsubscribe_url"])):
            headers["List-Unsubscribe"] = f"<{own}>"
        return Composed(email, headers, url)


def site_link(value: object) -> str | None:
    """A site's own unsubscribe link when it can go in List-Unsubscribe; None otherwise."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _SITE_LINK.fullmatch(value) else None
