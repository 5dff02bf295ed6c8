"""What `check` reads from the schema, on every backend: empty, complete, half upgraded."""

from sidecar.db import migrations
from sidecar.db.models import ALL_MODELS, SchemaVersion


def test_an_empty_database_is_empty_and_has_nothing_half_done(db):
    db.drop_tables(list(ALL_MODELS), safe=True)
    db.execute_sql("CREATE TABLE other_app (id INTEGER PRIMARY KEY)")  # not ours: ignored
    try:
        assert migrations.is_empty(db) and migrations.unrecorded_steps(db) == []
        migrations.upgrade(db)
        assert not migrations.is_empty(db) and migrations.unrecorded_steps(db) == []
    finally:
        db.execute_sql("DROP TABLE other_app")


def test_a_step_missing_below_the_newest_or_tables_without_a_record_are_half_done(db):
    SchemaVersion.delete().where(SchemaVersion.version == 2).execute()
    assert migrations.unrecorded_steps(db) == [2]
    SchemaVersion.delete().execute()
    assert not migrations.is_empty(db)
    assert migrations.unrecorded_steps(db) == [v for v, _, _ in migrations.STEPS]
    migrations.upgrade(db)  # the fix `check` gives
    assert migrations.unrecorded_steps(db) == [] and migrations.current_version(db) == (
        migrations.LATEST
    )
