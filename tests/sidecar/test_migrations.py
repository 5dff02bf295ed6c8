"""What `check` reads from the schema, on every backend: empty, complete, half upgraded,
or another application's tables under our names."""

import pytest

from sidecar.db import migrations
from sidecar.db.models import ALL_MODELS, SchemaVersion
from sidecar.errors import ConfigError


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


def test_another_applications_table_named_like_ours_is_named_and_upgrade_creates_nothing(db):
    db.drop_tables(list(ALL_MODELS), safe=True)
    db.execute_sql("CREATE TABLE job (id INTEGER PRIMARY KEY, queue TEXT, payload TEXT)")
    assert migrations.tables_named_like_ours(db) == ["job"]
    assert migrations.tables_of_others(db) == {"job": ["payload", "queue"]}
    with pytest.raises(ConfigError) as err:
        migrations.upgrade(db)
    assert str(err.value) == (
        "the database holds tables of another application under names moodle-offload uses: "
        "job (columns payload, queue); give moodle-offload a database of its own (database.url)"
    )
    assert db.get_tables() == ["job"]  # nothing of ours mixed in


def test_another_applications_schema_version_table_records_no_step_of_ours(db):
    db.drop_tables(list(ALL_MODELS), safe=True)
    db.execute_sql(
        "CREATE TABLE schema_version (installed_rank INTEGER PRIMARY KEY, version VARCHAR(50))"
    )
    db.execute_sql("INSERT INTO schema_version (installed_rank, version) VALUES (1, '1')")
    assert migrations.applied_versions(db) == set() and not migrations.is_empty(db)
    assert migrations.tables_of_others(db) == {"schema_version": ["installed_rank"]}
    with pytest.raises(ConfigError, match=r"schema_version \(columns installed_rank\)"):
        migrations.upgrade(db)


def test_migration_8_adds_the_job_page_index_to_a_version_7_database(db):
    """recipient(job_id, status, timesent, updated_at): a job's counts by status and its
    progress chart read one job's rows of it, not every sent row of the ledger."""
    name = "recipient_job_id_status_timesent_updated_at"
    db.execute_sql(f"DROP INDEX {name}" + (" ON recipient" if "MySQL" in type(db).__name__ else ""))
    SchemaVersion.delete().where(SchemaVersion.version >= 8).execute()
    assert name not in {i.name for i in db.get_indexes("recipient")}
    assert migrations.unrecorded_steps(db) == [] and migrations.current_version(db) == 7

    assert migrations.upgrade(db)[0] == 8
    assert migrations.upgrade(db) == []
    (index,) = [i for i in db.get_indexes("recipient") if i.name == name]
    assert index.columns == ["job_id", "status", "timesent", "updated_at"] and not index.unique
    SchemaVersion.delete().where(SchemaVersion.version == 8).execute()
    assert migrations.upgrade(db) == [8]  # a database created with the index: left as it is


def test_migration_9_adds_the_revoke_reason_to_a_version_8_database(db):
    from playhouse.migrate import SchemaMigrator, migrate

    migrate(SchemaMigrator.from_database(db).drop_column("certificate", "revoked_reason"))
    SchemaVersion.delete().where(SchemaVersion.version >= 9).execute()
    assert migrations.current_version(db) == 8
    assert migrations.upgrade(db)[0] == 9
    assert "revoked_reason" in {c.name for c in db.get_columns("certificate")}
    assert migrations.upgrade(db) == []


def test_migration_10_adds_the_write_back_state_to_a_version_9_database(db):
    from playhouse.migrate import SchemaMigrator, migrate

    index = "certificate_record_state_courseid"
    db.execute_sql(f"DROP INDEX {index}" + (" ON certificate" if "MySQL" in type(db).__name__
                                            else ""))  # fmt: skip
    migrator = SchemaMigrator.from_database(db)
    for name in ("record_state", "record_at", "record_error"):
        migrate(migrator.drop_column("certificate", name))
    SchemaVersion.delete().where(SchemaVersion.version >= 10).execute()
    assert migrations.current_version(db) == 9
    assert migrations.upgrade(db)[0] == 10
    columns = {c.name for c in db.get_columns("certificate")}
    assert {"record_state", "record_at", "record_error"} <= columns
    assert index in {i.name for i in db.get_indexes("certificate")}
    assert migrations.upgrade(db) == []
