"""`send reengagement --course ID --inactive-days N`: the `inactive` audience, fired now."""

import click

from sidecar.cli import Context, pass_ctx
from sidecar.cli.send import send


@send.command("reengagement")
@click.option("--course", "courseid", type=int, required=True, help="Moodle course id.")
@click.option("--inactive-days", type=click.IntRange(min=1), required=True,
              help="Learners whose last access to the course is older (or never).")  # fmt: skip
@click.option("--exclude-completed", is_flag=True, help="Leave out who completed the course.")
@click.option("--company", "companyid", type=int, default=0, help="IOMAD company: its users only.")
@click.option("--key", help="Idempotency key (default: one per course, inactivity and UTC day).")
@click.option("--dry-run", is_flag=True, help="Show the preview only; send nothing.")
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def send_reengagement(
    obj: Context, courseid: int, inactive_days: int, exclude_completed: bool,
    companyid: int, key: str | None, dry_run: bool, deliver: bool, yes: bool,
) -> None:  # fmt: skip
    """Email the active learners of a course who have not been in it for N days."""
    from sidecar import tools
    from sidecar.cli.adhoc import preview_and_send

    tool = tools.reengagement(
        courseid, inactive_days, now=obj.runtime.clock(), exclude_completed=exclude_completed,
        companyid=companyid, key=key,
    )  # fmt: skip
    preview_and_send(obj, tool, yes=yes, deliver=deliver, dry_run=dry_run)
