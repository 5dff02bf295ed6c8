"""sidecar.db.transfer (`db copy`): every row of every table arrives as it was, whatever
the page size, composite keys included."""

import pytest

from sidecar import jobs, unsubscribe
from sidecar.db import migrations, transfer
from sidecar.db.connect import make_database, open_database


def table(url: str, model) -> list[tuple]:
    db = make_database(url)
    try:
        return sorted(model.select(*model._meta.sorted_fields).tuples().execute(db), key=repr)
    finally:
        db.close()


@pytest.fixture
def source(tmp_path, clock) -> str:
    """An SQLite ledger: two jobs of 7 in batches of 3 (send keys under two idempotency
    keys), and opt-outs keyed by (userid, kind)."""
    url = f"sqlite:///{tmp_path}/source.db"
    db = open_database(url)
    migrations.upgrade(db)
    for key in ("csv:b", "csv:a"):
        people = [
            jobs.RecipientIn(i, f"u{i}@example.org", f"F{i}", "L", {"n": i}) for i in range(1, 8)
        ]
        spec = jobs.JobSpec(type="send_csv", template_id="custom", source="test",
                            idempotency_key=key)  # fmt: skip
        jobs.create_job(spec, jobs.prepare(people), batch_size=3, now=clock())
    for userid, kind in [(3, "custom"), (1, "reminders"), (3, "reminders"), (2, "custom")]:
        unsubscribe.opt_out(userid, kind, "cli", clock())
    db.close()
    return url


def test_every_row_is_copied_as_it_was_in_pages_of_two(source, db_url):
    done = transfer.copy_ledger(source, db_url, batch=2)
    counts = {c.table: c.target for c in done.counts}
    assert counts["recipient"] == 14 and counts["send_key"] == 14 and counts["opt_out"] == 4
    assert counts["batch"] == 6 and counts["job"] == 2
    for model in transfer.TABLES:
        assert table(db_url, model) == table(source, model), model._meta.table_name


def test_a_copy_into_the_configured_database_itself_is_refused(source, tmp_path):
    with pytest.raises(transfer.CopyError, match="is the configured database itself"):
        transfer.copy_ledger(source, f"sqlite:///{tmp_path}/./source.db")
