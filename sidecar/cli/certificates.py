"""`certificates issue --course ID [--user ID...] [--reissue]`."""

import click

from sidecar.cli import Context, main, pass_ctx


@main.group()
def certificates() -> None:
    """PDF certificates of course completion."""


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
