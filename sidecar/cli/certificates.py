"""`certificates issue --course ID [--user ID...] [--reissue]`, `certificates revoke CODE
--reason TEXT`, `certificates zip --course ID -o FILE`."""

import getpass

import click

from sidecar.cli import Context, is_interactive, main, pass_ctx


@main.group()
def certificates() -> None:
    """Certificates: issue a course's, revoke one, or a course's in one ZIP."""


@certificates.command("issue")
@click.option("--course", "courseid", type=int, required=True, help="Moodle course id.")
@click.option("--user", "userids", type=int, multiple=True,
              help="Only this user (repeat for more); one not completed is reported.")  # fmt: skip
@click.option("--company", "companyid", type=int, default=0, help="IOMAD company: its users only.")
@click.option("--reissue", is_flag=True, help="Also to learners who hold one: new codes.")
@click.option("--dry-run", is_flag=True, help="Show the preview only; send nothing.")
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def certificates_issue(obj: Context, courseid: int, userids: tuple[int, ...], companyid: int,
                       reissue: bool, dry_run: bool, deliver: bool, yes: bool) -> None:  # fmt: skip
    """Issue certificates to the completed learners of a course, once per course."""
    from sidecar import tools
    from sidecar.cli.adhoc import preview_and_send

    tool = tools.certificates(
        courseid, now=obj.runtime.clock(), userids=userids, reissue=reissue, companyid=companyid
    )
    preview_and_send(obj, tool, yes=yes, deliver=deliver, dry_run=dry_run)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


@certificates.command("revoke")
@click.argument("code")
@click.option("--reason", required=True, help="Why (1 to 500 characters; shown on /verify).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def certificates_revoke(obj: Context, code: str, reason: str, yes: bool) -> None:
    """Revoke a certificate: /verify/CODE then says revoked, its link answers 410.

    Exit 0 when revoked, and also when it was revoked already (it says so, with the
    first revocation's date and reason); exit 1 for an unknown code."""
    from sidecar import certificates as issued
    from sidecar.errors import NotFound

    rt = obj.runtime
    reason = issued.clean_reason(reason)
    cert = issued.find(code)
    if cert is None:
        raise NotFound(
            f"no certificate has the code {code.strip()[:32]!r}: check the code printed on "
            "the certificate (letters and digits, any case)"
        )
    if cert.revoked_at is None and not yes:
        if not is_interactive():
            raise click.ClickException("not a terminal: pass --yes to confirm the revocation")
        click.confirm(
            f"Revoke certificate {cert.code} (user {cert.userid}, course {cert.courseid}, "
            f"issued {cert.issued_at:%Y-%m-%d})?",
            abort=True,
        )
    done = issued.revoke_code(cert.code, reason, rt.clock(), name=_os_user(), source="os",
                              via="cli")  # fmt: skip
    when = f"{done.revoked_at:%Y-%m-%d %H:%M} UTC"
    if done.done:
        click.echo(f"certificate {done.code} revoked ({when}): {done.reason}")
    else:
        click.echo(f"certificate {done.code} was already revoked on {when}: {done.reason} "
                   "(nothing changed)")  # fmt: skip


@certificates.command("zip")
@click.option("--course", type=int, required=True, help="The course id.")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only certificates issued at or after this date (UTC).",
)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The ZIP file to write (replaced when complete).")  # fmt: skip
@pass_ctx
def certificates_zip(obj: Context, course: int, since, output: str) -> None:
    """Every issued, non-revoked certificate of a course in one ZIP.

    Exit 1 when a PDF could not be read: the ZIP is still written without it, and the
    certificates left out are listed here and in its MISSING.txt."""
    import sys
    from pathlib import Path

    from sidecar import certzip

    rt = obj.runtime
    entries = certzip.select(course, since)
    if not entries:
        raise click.ClickException(
            f"course {course} has no issued, valid certificate"
            + (f" since {since:%Y-%m-%d %H:%M}" if since else "")
            + ": nothing to zip"
        )
    path = Path(output)
    if not path.parent.is_dir():
        raise click.ClickException(f"{path.parent}: no such directory")
    open_pdf = certzip.opener(
        Path(obj.config.providers.local.certificate_dir), certzip.cloud_stores(obj.config, rt)
    )
    if sys.stderr.isatty():
        with click.progressbar(length=len(entries), label="zipping", file=sys.stderr) as bar:
            missing = certzip.write_file(entries, path, open_pdf, lambda e: bar.update(1))
    else:
        missing = certzip.write_file(entries, path, open_pdf)
    written = len(entries) - len(missing)
    click.echo(f"{path}: {written} certificates of course {course}")
    if missing:
        click.echo(f"{len(missing)} could not be read and are not in the ZIP "
                   f"(listed in its {certzip.MISSING_NAME}):", err=True)  # fmt: skip
        for m in missing:
            click.echo(f"  {m.entry.code} user {m.entry.userid}: {m.why}", err=True)
        raise SystemExit(1)
