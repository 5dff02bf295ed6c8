"""Templates: sandboxed Jinja2, undefined variables are errors, found at preview.

An email template is one file `{id}.html` with blocks `subject`, `html`, `text` and an
optional `certificate_delivery` ("attach" | "link"). The html block is autoescaped;
subject and text are rendered from a second environment without escaping, so
"O'Brien & Sons" reads right in both. `templates.dir` overrides the shipped files, and
`templates.dir/companies/{id}/{template}.html` overrides both for an IOMAD company's mail
(a job with that tenant): `for_company` finds it, whatever the kind of email.
An edited file is picked up within `RECHECK_SECONDS`: Jinja2 checks a file's mtime on
every lookup (an `{% include %}` is one), which for 50,000 emails was 150,000 stat calls.
"""

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from sidecar.errors import TemplateError

SHIPPED = Path(__file__).resolve().parent / "templates"
RECHECK_SECONDS = 1.0

TEMPLATE_VARIABLES: dict[str, str] = {
    "learner.userid / email / firstname / lastname / fullname": "the recipient",
    "course.fullname / shortname / url": "the course (reminders, certificates)",
    "company.name": "the IOMAD company, empty outside IOMAD",
    "today": "the sending date, YYYY-MM-DD",
    "issued_date": "certificates: the issue date, e.g. 18 November 2025",
    "certificate_url": "the learner's lasting certificate link (/certificates/{code})",
    "verification.code / url / qr": "certificates: code, public check page, QR image",
    "unsubscribe_url": "reminders, re-engagement, CSV: the learner's one-click unsubscribe "
    "link (the List-Unsubscribe header's); empty when off and in other mail",
    "inactive_days": "re-engagement: days since the learner's last access",
    "site.name / site.url, username, temporary_password": "welcome emails",
    "license.name / reference / startdate / expirydate / validlength, courses (list of "
    "course), issued_date": "licence allocation emails (validlength in days; dates as "
    "18 November 2025, empty when IOMAD has none)",
    "message.subject / message.body": "custom (CSV) messages; their text may itself use "
    "these variables and the CSV's columns, e.g. Dear {{ learner.firstname }}",
    "<any CSV column>": "every extra column of a CSV send",
}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    certificate_delivery: str = "attach"


def learner_vars(userid: int, email: str, firstname: str, lastname: str) -> dict:
    fullname = f"{firstname} {lastname}".strip()
    return {
        "learner": {
            "userid": userid,
            "email": email,
            "firstname": firstname,
            "lastname": lastname,
            "fullname": fullname,
        }
    }


class _RecheckLoader(jinja2.BaseLoader):
    """Another loader whose up-to-date check looks at the file at most once a second."""

    def __init__(self, inner: jinja2.BaseLoader, every: float = RECHECK_SECONDS):
        self.inner = inner
        self.every = every

    def get_source(self, environment, template):
        source, filename, uptodate = self.inner.get_source(environment, template)
        return source, filename, _throttled(uptodate, self.every) if uptodate else None

    def list_templates(self):
        return self.inner.list_templates()


def _throttled(check: Callable[[], bool], every: float) -> Callable[[], bool]:
    last = [monotonic(), True]

    def uptodate() -> bool:
        now = monotonic()
        if last[1] and now - last[0] < every:
            return True
        last[0], last[1] = now, check()
        return last[1]

    return uptodate


COMPANIES = "companies"


class Renderer:
    def __init__(self, template_dir: Path | None = None):
        self.template_dir: Path | None = None
        self._company_files: dict[tuple[int, str], tuple[float, str]] = {}
        self.use_dir(template_dir)

    def for_company(self, template_id: str, company: int | None) -> str:
        """The template to load for a company's mail: `companies/{company}/{template_id}`
        when templates.dir has that file, else `template_id`. Looked up again at most once
        a RECHECK_SECONDS, so a file added or removed is seen without a restart."""
        base = self.template_dir
        if not company or base is None:
            return template_id
        now = monotonic()
        found = self._company_files.get((company, template_id))
        if found is not None and now - found[0] < RECHECK_SECONDS:
            return found[1]
        name = f"{COMPANIES}/{int(company)}/{template_id}"
        if not (base / COMPANIES / str(int(company)) / f"{template_id}.html").is_file():
            name = template_id
        self._company_files[(company, template_id)] = (now, name)
        return name

    def use_dir(self, template_dir: Path | None) -> None:
        """Templates from `template_dir` (then the shipped ones) from now on: a changed
        `templates.dir` on SIGHUP. A render already under way finishes with the old ones."""
        loaders = [jinja2.FileSystemLoader(str(template_dir))] if template_dir else []
        loaders.append(jinja2.FileSystemLoader(str(SHIPPED)))
        loader = _RecheckLoader(jinja2.ChoiceLoader(loaders))
        common = dict(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        html = SandboxedEnvironment(autoescape=True, **common)
        text = SandboxedEnvironment(autoescape=False, **common)
        fill = _filler(text)
        html.filters["fill"] = text.filters["fill"] = fill
        self._envs = (html, text)  # one assignment: readers see the old pair or the new one
        self.template_dir = template_dir
        self._company_files = {}

    def render_email(
        self, template_id: str, variables: Mapping, company: int | None = None
    ) -> RenderedEmail:
        """Subject, HTML and text of one email (`company`'s own template when it has one).
        Raises TemplateError naming the problem."""
        template_id = self.for_company(template_id, company)
        html_env, text_env = self._envs
        with _explained(template_id):
            text_t = text_env.get_template(f"{template_id}.html")
            html_t = html_env.get_template(f"{template_id}.html")
            for block in ("subject", "html", "text"):
                if block not in text_t.blocks:
                    raise TemplateError(f"template {template_id!r}: the '{block}' block is missing")
            # one context per environment (the blocks only read it), over a plain dict of
            # the template's globals and the variables: Jinja2 would merge in the globals
            # from a ChainMap on every context
            plain = text_t.new_context({**_globals(text_t), **variables}, shared=True)
            subject = _block(text_t, "subject", plain)
            html_vars = {**_globals(html_t), **variables}
            html = _block(html_t, "html", html_t.new_context(html_vars, shared=True))
            text = _block(text_t, "text", plain)
            delivery = "attach"
            if "certificate_delivery" in text_t.blocks:
                delivery = _block(text_t, "certificate_delivery", plain).strip() or "attach"
            if delivery not in ("attach", "link"):
                raise TemplateError(
                    f"template {template_id!r}: certificate_delivery must be 'attach' or 'link'"
                )
        return RenderedEmail(" ".join(subject.split()), html.strip(), text.strip() + "\n", delivery)

    def preview(
        self, template_id: str, variables: Mapping, company: int | None = None
    ) -> RenderedEmail:
        """render_email for the preview: the same checks, before any job exists."""
        return self.render_email(template_id, variables, company)

    def render_certificate(self, template_id: str, variables: Mapping) -> str:
        """A whole certificate HTML document. Raises TemplateError."""
        with _explained(template_id):
            return self._envs[0].get_template(f"{template_id}.html").render(variables)

    def email_templates(self) -> list[str]:
        """The ids of the email templates (shipped and `templates.dir`), sorted: not the
        certificate's, not partials (`_footer`), nothing in a subfolder."""
        loader = self._envs[1].loader
        names = {n.removesuffix(".html") for n in loader.list_templates() if n.endswith(".html")}
        return sorted(n for n in names if "/" not in n and not n.startswith("_")
                      and n != "certificate")  # fmt: skip

    def variables(self, template_id: str) -> set[str]:
        """Top-level variable names the template uses."""
        with _explained(template_id):
            text_env = self._envs[1]
            source, _, _ = text_env.loader.get_source(text_env, f"{template_id}.html")
            return meta.find_undeclared_variables(text_env.parse(source))


def _filler(text_env: SandboxedEnvironment):
    """The `fill` filter: a text the admin wrote (a CSV send's --subject and message file)
    rendered as a template with the email's own variables, so `Dear {{ learner.firstname }}`
    greets each learner. Rendered without escaping, in the sandbox, undefined variables are
    errors (found at preview); the calling template escapes the result where it is HTML."""

    @functools.lru_cache(maxsize=64)
    def compiled(source: str) -> jinja2.Template:
        return text_env.from_string(source)

    @jinja2.pass_context
    def fill(ctx: jinja2.runtime.Context, source: str) -> str:
        if "{" not in source:
            return source  # nothing to fill: the common case costs no compile
        return compiled(source).render(ctx.get_all())

    return fill


_GLOBALS: "weakref.WeakKeyDictionary[jinja2.Template, dict]" = weakref.WeakKeyDictionary()


def _globals(template: jinja2.Template) -> dict:
    """The template's globals as one dict, made once per compiled template."""
    found = _GLOBALS.get(template)
    if found is None:
        found = _GLOBALS[template] = dict(template.globals)
    return found


def _block(template: jinja2.Template, name: str, ctx: jinja2.runtime.Context) -> str:
    try:
        return "".join(template.blocks[name](ctx))
    except Exception:
        template.environment.handle_exception()  # re-raises with template line numbers


class _explained:
    """Turns any Jinja2 error into one TemplateError line with the template and line."""

    def __init__(self, template_id: str):
        self.template_id = template_id

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, TemplateError):
            return False
        if isinstance(exc, jinja2.TemplateNotFound):
            raise TemplateError(
                f"template {self.template_id!r} not found (shipped: {', '.join(shipped_ids())})"
            ) from None
        if isinstance(exc, SecurityError):
            raise TemplateError(f"template {self.template_id!r}: not allowed: {exc}") from None
        if isinstance(exc, jinja2.TemplateError):
            line = getattr(exc, "lineno", None) or _line_from(tb)
            where = f" line {line}" if line else ""
            raise TemplateError(f"template {self.template_id!r}{where}: {exc}") from None
        return False


def _line_from(tb) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".html"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def shipped_ids() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.html"))
