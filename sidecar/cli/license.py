"""`send license --since 24h`: IOMAD licence-allocation emails, previewed, confirmed, sent once."""

import click

from sidecar.cli import Context, pass_ctx
from sidecar.cli.send import DRY_RUN, confirm_or_stop, send


@send.command("license")
@click.option(
    "--since", "since_text", required=True, metavar="WHEN",
    help="Allocations made since then: a duration back from now (24h, 2d) or a date (2025-11-18).",
)  # fmt: skip
@click.option("--company", "companyid", type=click.IntRange(min=1), help="One IOMAD company.")
@click.option("--license", "licenseid", type=click.IntRange(min=1), help="One licence.")
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@DRY_RUN
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def send_license(
    obj: Context, since_text: str, companyid: int | None, licenseid: int | None,
    deliver: bool, dry_run: bool, yes: bool,
) -> None:  # fmt: skip
    """Email the users allocated an IOMAD licence since WHEN: once per allocation, with the
    licence's courses and validity, in each company's own template and sender."""
    from sidecar import licensemail

    rt = obj.runtime
    try:
        since = licensemail.parse_since(since_text, rt.clock())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    options = licensemail.Options(since, companyid or 0, licenseid or 0)
    pv = licensemail.preview(rt, options)
    print_preview(pv)
    if not pv.plans:
        click.echo("nothing to send")
        return
    question = f"Send {pv.to_send} licence emails?"
    if not confirm_or_stop(pv.to_send, question, yes=yes, dry_run=dry_run):
        return
    created = licensemail.commit(rt, pv)
    for plan, job in created:
        click.echo(
            f"job {job.job_id}: company {plan.companyid}: {job.pending} to send"
            + (f", {job.skipped_duplicate} already sent" if job.skipped_duplicate else "")
            + (f", {job.suppressed} suppressed" if job.suppressed else "")
            + (f", {job.invalid} invalid addresses" if job.invalid else "")
            + f" (route {plan.route.route})"
        )
    if not deliver:
        click.echo("the daemon (`moodle-offload run`) delivers them; watch with `jobs show`")
        return
    from sidecar.localrun import deliver_job

    for plan, job in created:
        if plan.route.is_cloud or not job.pending:
            continue  # a cloud job is submitted by the daemon
        counts = deliver_job(rt, job.job_id)
        click.echo(
            f"job {job.job_id}: delivered: "
            + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
        )


def print_preview(pv) -> None:
    o = pv.options
    scope = "".join(
        [
            f", company {o.companyid}" if o.companyid else "",
            f", licence {o.licenseid}" if o.licenseid else "",
        ]
    )
    click.echo(
        f"licence allocations since {o.since:%Y-%m-%d %H:%M} UTC{scope}: {pv.found} found, "
        f"{pv.to_send} to send"
    )
    if pv.excluded:
        click.echo(
            f"  {sum(pv.excluded.values())} will not be sent: "
            + ", ".join(f"{why} ({n})" for why, n in sorted(pv.excluded.items()))
        )
    for plan in pv.plans:
        name = f" {plan.name!r}" if plan.name else ""
        jobs = (
            f" in {len(plan.rounds)} jobs (users allocated more than once)"
            if len(plan.rounds) > 1
            else ""
        )
        click.echo(f"  company {plan.companyid}{name}: {plan.recipients} emails{jobs}")
        click.echo(
            "    licences: "
            + ", ".join(f"{lid} {lname!r} ({n})" for lid, lname, n in plan.by_license())
        )
        click.echo(f"    template: {plan.template}.html; from: {plan.sender} ({plan.sender_from})")
        click.echo(f"    route: {plan.route.route}: {plan.route.reason}")
    if pv.sample is not None:
        click.echo(f"--- sample (company {pv.sample_company}) ---")
        click.echo(f"Subject: {pv.sample.subject}")
        click.echo(pv.sample.text.strip())
        click.echo("--------------------------")
