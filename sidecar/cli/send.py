"""`send csv FILE`: preview, confirm, commit (and optionally deliver here and now)."""

from collections import Counter
from pathlib import Path

import click

from sidecar.cli import Context, is_interactive, main, pass_ctx

MAX_PROBLEMS_SHOWN = 50


DRY_RUN = click.option(
    "--dry-run", is_flag=True, help="Show the preview only; send nothing (exit 0)."
)


def confirm_or_stop(count: int, question: str, *, yes: bool, dry_run: bool) -> bool:
    """After a tool's preview: False for --dry-run (saying nothing was sent); otherwise ask
    `question` unless --yes, refusing without a terminal, and True once confirmed."""
    if dry_run:
        click.echo(f"dry run: nothing sent; {count} to send")
        return False
    if not yes:
        if not is_interactive():
            raise click.ClickException("not a terminal: pass --yes to confirm the send")
        click.confirm(question, abort=True)
    return True


@main.group()
def send() -> None:
    """Bulk tools: each previews first and asks to confirm (--yes to skip)."""


@send.command("csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--template", "template_id", default="custom", show_default=True)
@click.option("--subject", help="Subject for the custom template (message.subject).")
@click.option(
    "--message-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Plain-text body for the custom template (message.body).",
)
@click.option("--certificate", is_flag=True, help="Also issue a PDF certificate to each learner.")
@click.option("--key", help="Idempotency key: re-sends under the same key skip users already sent.")
@click.option("--skip-invalid", is_flag=True, help="Send the valid rows even if some are invalid.")
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@DRY_RUN
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def send_csv(
    obj: Context,
    file: Path,
    template_id: str,
    subject: str | None,
    message_file: Path | None,
    certificate: bool,
    key: str | None,
    skip_invalid: bool,
    deliver: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Send a message to the rows of a CSV (userid,email,firstname,lastname[,extra...])."""
    from sidecar import sendcsv

    rt = obj.runtime
    body = message_file.read_text(encoding="utf-8") if message_file else None
    message = sendcsv.CsvMessage(template_id, subject, body, certificate, key)
    if template_id == "custom" and (subject is None or body is None):
        raise click.UsageError("the custom template needs --subject and --message-file")
    pv = sendcsv.preview(file, message, rt.renderer)
    print_preview(pv)
    if pv.problems and not skip_invalid:
        raise click.ClickException(
            f"{len(pv.problems)} invalid rows: nothing sent. Fix them, or pass --skip-invalid "
            "to send the valid rows only."
        )
    question = f"Send to {pv.to_send} recipients?"
    if not confirm_or_stop(pv.to_send, question, yes=yes, dry_run=dry_run):
        return
    created = sendcsv.commit(
        pv,
        skip_invalid=skip_invalid,
        batch_size=rt.config.offload.job_batch_size,
        sender=rt.config.providers.local.from_,
        now=rt.clock(),
    )
    click.echo(
        f"job {created.job_id}: {created.pending} to send in {created.batches} batches, "
        f"{created.skipped_duplicate} already sent under key {pv.key}"
        + (f", {created.suppressed} suppressed (see `jobs show`)" if created.suppressed else "")
    )
    deliver_or_leave(rt, created.job_id, deliver)


def deliver_or_leave(rt, job_id: str, deliver: bool) -> None:
    """`--deliver`: deliver the job here with a progress bar; else say the daemon will."""
    if deliver:
        from sidecar.localrun import deliver_job

        counts = deliver_job(rt, job_id)
        click.echo("delivered: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    else:
        click.echo("the daemon (`moodle-offload run`) delivers it; watch with `jobs show`")


def print_preview(pv) -> None:
    rows = pv.data.rows
    merged = pv.data.merged
    click.echo(
        f"{pv.path}: {len(rows)} valid rows, {len(pv.problems)} invalid"
        + (f", {len(merged)} repeated rows merged" if merged else "")
    )
    if pv.data.extra_columns:
        click.echo(f"  extra columns (template variables): {', '.join(pv.data.extra_columns)}")
    if pv.already_sent:
        click.echo(f"  {pv.already_sent} already sent under key {pv.key}: they will be skipped")
    if pv.held_back:
        reasons = Counter(
            "suppressed address" if why.startswith("suppressed") else why
            for why in pv.held_back.values()
        )
        click.echo(
            f"  {len(pv.held_back)} will not be sent: "
            + ", ".join(f"{why} ({n})" for why, n in sorted(reasons.items()))
        )
    if pv.held_back or pv.already_sent:
        click.echo(f"  {pv.to_send} to send")
    for problem in pv.problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(f"  {problem.message}")
    if len(pv.problems) > MAX_PROBLEMS_SHOWN:
        click.echo(f"  ... and {len(pv.problems) - MAX_PROBLEMS_SHOWN} more")
    for note in merged[:MAX_PROBLEMS_SHOWN]:
        click.echo(f"  note: {note.message}")
    if len(merged) > MAX_PROBLEMS_SHOWN:
        click.echo(f"  ... and {len(merged) - MAX_PROBLEMS_SHOWN} more repeated rows")
    if pv.sample is not None:
        click.echo("--- sample (first row) ---")
        click.echo(f"Subject: {pv.sample.subject}")
        click.echo(pv.sample.text.strip())
        click.echo("--------------------------")
