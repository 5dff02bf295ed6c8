"""Schedule sync from the Moodle sandbox (over HTTP on 127.0.0.1) and from the schedules
file into the database, on every backend: new, changed, disabled, deleted, malformed,
Moodle or the file unreachable, cloud settings, and what /healthz reports."""

import logging
from datetime import datetime, timedelta

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from schedules.model import Schedule
from sidecar import moodle, sync
from sidecar.config import Config
from sidecar.db.models import Company, ScheduleRecord, SyncState

PREFIX = "local_manireports"
GET_SCHEDULES = f"{PREFIX}_get_schedules"
T0 = datetime(2025, 11, 18, 12, 0, 0)
T1 = T0 + timedelta(minutes=5)
T2 = T1 + timedelta(minutes=5)


@pytest.fixture
def sandbox():
    # Schedules 1 weekly, 2 daily, 3 custom (every 14 days), 4 monthly and disabled;
    # companies 4 (AWS), 5 (CLOUDFLARE), 6 (SYSTEM, offload disabled).
    site = generate_site(SiteSpec(seed=5, learners=10, courses=2, companies=3, schedules=4))
    with SandboxServer(site) as server:
        yield server


@pytest.fixture
def site(sandbox):
    return sandbox.site


def make_config(url: str | None = None, token: str = "", **over) -> Config:
    raw: dict = {"schedules": {"source": over.pop("source", "moodle")}}
    if "file" in over:
        raw["schedules"]["file"] = str(over.pop("file"))
    if url is not None:
        # One try: an unreachable Moodle answers at once instead of after a backoff.
        raw["moodle"] = {"url": url, "token": token, "retry_attempts": 1}
    raw.update(over)
    return Config.model_validate(raw)


@pytest.fixture
def config(sandbox):
    return make_config(sandbox.url, sandbox.site.token)


def run(config: Config, now: datetime) -> list[sync.SyncResult]:
    return sync.sync_all(config, lambda: moodle.open_client(config), now)


def run_one(config: Config, now: datetime) -> sync.SyncResult:
    (result,) = run(config, now)
    return result


def counts(r: sync.SyncResult) -> tuple[int, int, int, int]:
    return r.new, r.changed, r.unchanged, r.deleted


def records(source: str = "moodle") -> dict[int, ScheduleRecord]:
    rows = ScheduleRecord.select().where(ScheduleRecord.source == source)
    return {r.remote_id: r for r in rows}


def snapshot() -> list[tuple]:
    """Everything sync writes about schedules, to compare before and after a failure."""
    rows = ScheduleRecord.select().order_by(ScheduleRecord.source, ScheduleRecord.remote_id)
    return [
        (r.source, r.remote_id, r.name, r.enabled, r.data, r.fingerprint, r.timemodified,
         r.first_seen_at, r.synced_at, r.deleted_at)
        for r in rows
    ]  # fmt: skip


def row_of(site, schedule_id: int) -> dict:
    return next(s for s in site.schedules if s["id"] == schedule_id)


def edit(site, schedule_id: int, **changes) -> None:
    """An admin edits a schedule in Moodle: the fields change and timemodified moves on."""
    row = row_of(site, schedule_id)
    row.update(changes, timemodified=row["timemodified"] + 60)


# --- Moodle: new, unchanged, changed, disabled, deleted ---------------------------------------


def test_first_sync_stores_every_moodle_schedule_as_new_first_seen_now(db, site, config):
    result = run_one(config, T0)
    assert result.error is None
    assert counts(result) == (4, 0, 0, 0)
    assert result.skipped == []
    stored = records()
    assert sorted(stored) == [1, 2, 3, 4]
    for raw in site.schedules:
        rec = stored[raw["id"]]
        assert rec.name == raw["name"]
        assert rec.first_seen_at == T0 and rec.synced_at == T0
        assert rec.deleted_at is None
        assert rec.timemodified == raw["timemodified"]
        assert Schedule.from_remote(rec.data) == Schedule.from_remote(raw)
    assert [rec.enabled for _, rec in sorted(stored.items())] == [True, True, True, False]
    assert records("file") == {}
    state = SyncState.get_by_id("moodle")
    assert (state.ok_at, state.error, state.schedules, state.skipped) == (T0, None, 4, 0)
    assert result.summary == "moodle: 4 new, 0 changed, 0 unchanged, 0 deleted"


def test_names_in_any_script_survive_the_round_trip(db, site, config):
    name = "Rappel — Łódź, Дмитрий, 日本語 🎓"
    row_of(site, 1)["name"] = name
    run(config, T0)
    assert records()[1].name == name
    assert records()[1].data["name"] == name


def test_a_schedule_name_longer_than_the_column_does_not_stop_the_sync(db, site, config):
    long_name = "Reminder " + "x" * 300
    row_of(site, 1)["name"] = long_name
    result = run_one(config, T0)
    assert result.error is None and counts(result) == (4, 0, 0, 0)
    assert records()[1].data["name"] == long_name  # what fires uses the whole name
    assert long_name.startswith(records()[1].name)
    assert counts(run_one(config, T1)) == (0, 0, 4, 0)


def test_second_sync_with_nothing_changed_counts_every_schedule_unchanged(db, site, config):
    run(config, T0)
    before = {rid: (r.data, r.fingerprint) for rid, r in records().items()}
    result = run_one(config, T1)
    assert counts(result) == (0, 0, 4, 0)
    stored = records()
    assert {rid: (r.data, r.fingerprint) for rid, r in stored.items()} == before
    assert {r.first_seen_at for r in stored.values()} == {T0}  # due times before stay unfired
    assert {r.synced_at for r in stored.values()} == {T1}
    assert SyncState.get_by_id("moodle").ok_at == T1


def test_edited_schedule_counts_changed_and_its_stored_copy_follows(db, site, config):
    run(config, T0)
    edit(site, 2, timeofday=17 * 3600, name="Certificates, evening run")
    result = run_one(config, T1)
    assert counts(result) == (0, 1, 3, 0)
    rec = records()[2]
    assert rec.data["timeofday"] == 17 * 3600
    assert rec.name == "Certificates, evening run"
    assert rec.timemodified == row_of(site, 2)["timemodified"]
    assert rec.first_seen_at == T0  # the same schedule, not a new one
    assert records()[1].data["timeofday"] == row_of(site, 1)["timeofday"]


def test_schedule_disabled_in_moodle_is_stored_disabled_not_deleted(db, site, config):
    run(config, T0)
    edit(site, 1, enabled=0)
    result = run_one(config, T1)
    assert counts(result) == (0, 1, 3, 0)
    rec = records()[1]
    assert rec.enabled is False and rec.data["enabled"] is False
    assert rec.deleted_at is None
    edit(site, 1, enabled=1)
    assert counts(run_one(config, T2)) == (0, 1, 3, 0)
    assert records()[1].enabled is True


def test_schedule_removed_in_moodle_is_marked_deleted_and_restored_when_it_comes_back(
    db, site, config
):
    run(config, T0)
    removed = row_of(site, 3)
    site.schedules.remove(removed)
    result = run_one(config, T1)
    assert counts(result) == (0, 0, 3, 1)
    stored = records()
    assert stored[3].deleted_at == T1
    assert [rid for rid, r in stored.items() if r.deleted_at is not None] == [3]
    # Still gone: not counted again, the deletion time stays the first one.
    assert counts(run_one(config, T1 + timedelta(minutes=1))) == (0, 0, 3, 0)
    assert records()[3].deleted_at == T1
    site.schedules.append(removed)
    result = run_one(config, T2)
    assert counts(result) == (0, 1, 3, 0)
    back = records()[3]
    assert back.deleted_at is None and back.synced_at == T2
    assert back.first_seen_at == T2  # nothing it missed while deleted fires


def test_a_moodle_site_with_no_schedules_left_deletes_them_all(db, site, config):
    run(config, T0)
    site.schedules.clear()
    result = run_one(config, T1)
    assert counts(result) == (0, 0, 0, 4)
    assert {r.deleted_at for r in records().values()} == {T1}


# --- Moodle: malformed schedules --------------------------------------------------------------

MALFORMED = [
    pytest.param(1, {"weekday": 9}, "weekday", id="weekly-on-weekday-9"),
    pytest.param(2, {"courseid": None}, "courseid", id="missing-courseid"),
    pytest.param(2, {"frequency": "hourly"}, "frequency", id="frequency-hourly"),
    pytest.param(4, {"monthday": 32}, "monthday", id="monthly-on-day-32"),
    pytest.param(3, {"custom_interval": 0}, "custom_interval", id="custom-every-0-days"),
    pytest.param(1, {"timeofday": 86400}, "timeofday", id="timeofday-past-midnight"),
]


@pytest.mark.parametrize(("sid", "bad", "field"), MALFORMED)
def test_malformed_new_schedule_is_skipped_naming_id_and_field_and_the_others_sync(
    db, site, config, caplog, sid, bad, field
):
    row_of(site, sid).update(bad)
    with caplog.at_level(logging.WARNING, logger="sidecar.sync"):
        result = run_one(config, T0)
    assert result.error is None
    assert counts(result) == (3, 0, 0, 0)
    (message,) = result.skipped
    assert f"schedule {sid}: {field}:" in message
    assert sorted(records()) == sorted({1, 2, 3, 4} - {sid})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"schedule {sid}: {field}:" in w for w in warned), warned
    assert SyncState.get_by_id("moodle").skipped == 1
    assert result.summary.endswith(", 1 malformed skipped")


@pytest.mark.parametrize(("sid", "bad", "field"), MALFORMED)
def test_schedule_malformed_after_a_good_sync_keeps_its_last_good_copy(
    db, site, config, sid, bad, field
):
    run(config, T0)
    good, original = records()[sid], dict(row_of(site, sid))
    edit(site, sid, **bad)
    edit(site, 1 if sid != 1 else 2, subject="Edited at the same time")
    result = run_one(config, T1)
    assert counts(result) == (0, 1, 2, 0)
    assert len(result.skipped) == 1 and f"schedule {sid}: {field}:" in result.skipped[0]
    kept = records()[sid]
    assert kept.deleted_at is None
    assert (kept.data, kept.fingerprint, kept.enabled) == (
        good.data,
        good.fingerprint,
        good.enabled,
    )
    # Fixed in Moodle: the fixed copy replaces the last good one.
    edit(site, sid, **{k: original[k] for k in bad}, subject="Fixed")
    result = run_one(config, T2)
    assert result.skipped == [] and result.changed == 1
    assert records()[sid].data["subject"] == "Fixed"


def test_two_malformed_schedules_are_each_reported_and_the_rest_sync(db, site, config):
    row_of(site, 1)["weekday"] = -1
    row_of(site, 3)["audience"] = "everyone"
    result = run_one(config, T0)
    assert counts(result) == (2, 0, 0, 0)
    assert len(result.skipped) == 2
    assert "schedule 1: weekday:" in result.skipped[0]
    assert "schedule 3: audience:" in result.skipped[1]
    assert sorted(records()) == [2, 4]


def test_schedule_given_twice_keeps_the_first_copy_and_says_so(db, site, config, caplog):
    site.schedules.append(dict(row_of(site, 2), name="Second copy"))
    with caplog.at_level(logging.WARNING, logger="sidecar.sync"):
        result = run_one(config, T0)
    assert counts(result) == (4, 0, 0, 0)
    assert records()[2].name == row_of(site, 2)["name"]
    (message,) = result.skipped
    assert "schedule 2: given twice" in message
    assert any("schedule 2: given twice" in r.getMessage() for r in caplog.records)


def test_malformed_schedule_without_an_id_is_reported_and_the_rest_sync(db, site, config):
    row_of(site, 2)["id"] = None
    result = run_one(config, T0)
    assert counts(result) == (3, 0, 0, 0)
    assert result.skipped and "id: required" in result.skipped[0]


# --- Moodle unreachable or not set up ---------------------------------------------------------


def _protocol_off(server):
    server.site.protocol_enabled = False


def _server_stopped(server):
    server.stop()


def _http_503(server):
    server.site.fail_next(GET_SCHEDULES, 1, status=503)


def _connection_reset(server):
    server.site.fail_next(GET_SCHEDULES, 1, status="reset")


def _token_expired(server):
    server.site.expire_token()


@pytest.mark.parametrize(
    ("break_moodle", "words"),
    [
        pytest.param(_protocol_off, "REST protocol are disabled", id="protocol-disabled"),
        pytest.param(_server_stopped, "", id="server-stopped"),
        pytest.param(_http_503, "", id="http-503"),
        pytest.param(_connection_reset, "", id="connection-reset"),
        pytest.param(_token_expired, "", id="token-expired"),
    ],
)
def test_moodle_unreachable_changes_nothing_and_records_the_error(
    db, sandbox, config, caplog, break_moodle, words
):
    assert run_one(config, T0).error is None
    edit(sandbox.site, 1, name="Edited while Moodle was down")
    sandbox.site.schedules.pop()  # would be a deletion, if Moodle could be read
    before = snapshot()
    break_moodle(sandbox)
    with caplog.at_level(logging.WARNING, logger="sidecar.sync"):
        result = run_one(config, T1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("from moodle failed, keeping the last good copy" in w for w in warned), warned
    assert not any(sandbox.site.token in w for w in warned)
    assert result.error
    assert words in result.error
    assert counts(result) == (0, 0, 0, 0)
    assert snapshot() == before
    assert result.summary.startswith("moodle: not synced, the last good copy stays: ")
    state = SyncState.get_by_id("moodle")
    assert (state.ok_at, state.error, state.error_at) == (T0, result.error, T1)
    assert state.schedules == 4  # what the last good sync saw
    assert sandbox.site.token not in result.error


def test_sync_after_an_outage_clears_the_error_and_applies_what_changed(db, site, config):
    run(config, T0)
    site.protocol_enabled = False
    assert run_one(config, T1).error
    site.protocol_enabled = True
    edit(site, 1, name="Edited during the outage")
    result = run_one(config, T2)
    assert result.error is None and counts(result) == (0, 1, 3, 0)
    state = SyncState.get_by_id("moodle")
    assert (state.ok_at, state.error, state.error_at) == (T2, None, None)


def test_moodle_down_on_the_very_first_sync_stores_nothing(db, site, config):
    site.protocol_enabled = False
    result = run_one(config, T0)
    assert result.error
    assert records() == {}
    state = SyncState.get_by_id("moodle")
    assert (state.ok_at, state.error_at) == (None, T0)


def test_companion_function_missing_from_the_service_is_named_in_the_error(db, site, config):
    run(config, T0)
    before = snapshot()
    site.remove_function(GET_SCHEDULES)
    result = run_one(config, T1)
    assert GET_SCHEDULES in result.error
    assert "external service" in result.error  # where to add it
    assert snapshot() == before
    assert SyncState.get_by_id("moodle").error == result.error


def test_without_a_moodle_section_the_moodle_source_says_what_to_set(db):
    config = make_config(None)
    result = run_one(config, T0)
    assert "moodle.url" in result.error
    assert SyncState.get_by_id("moodle").error == result.error


# --- cloud settings -------------------------------------------------------------------------


def companies() -> dict[int, tuple]:
    return {c.id: (c.enabled, c.provider, c.threshold) for c in Company.select()}


def test_cloud_settings_from_moodle_are_stored_per_company(db, site, config):
    assert [c["email_provider"] for c in site.cloud_settings] == ["AWS", "CLOUDFLARE", "SYSTEM"]
    run(config, T0)
    assert companies() == {
        4: (True, "aws", 100),
        5: (True, "cloudflare", 200),
        6: (False, "local", 300),
    }
    assert {c.updated_at for c in Company.select()} == {T0}
    site.cloud_settings[0].update(email_provider="CLOUDFLARE", threshold=50)
    site.cloud_settings[1].update(enabled=0)
    run(config, T1)
    assert companies()[4] == (True, "cloudflare", 50)
    assert companies()[5] == (False, "cloudflare", 200)


def test_a_null_threshold_in_the_cloud_settings_means_not_set_and_schedules_sync(
    db, site, config, caplog
):
    run(config, T0)
    site.cloud_settings[1]["threshold"] = None  # nullable in the return description
    edit(site, 1, name="Edited")
    with caplog.at_level(logging.WARNING, logger="sidecar.sync"):
        result = run_one(config, T1)
    assert result.error is None and counts(result) == (0, 1, 3, 0)
    # null means "not set": the config's threshold applies to company 5 from now on
    assert companies()[5] == (True, "cloudflare", None)


def test_companies_listed_in_the_config_keep_the_config_settings(db, sandbox):
    config = make_config(
        sandbox.url, sandbox.site.token,
        companies=[{"id": 5, "enabled": False, "provider": "local", "threshold": 9}],
    )  # fmt: skip
    run(config, T0)
    stored = companies()
    assert 5 not in stored  # config wins: Moodle's CLOUDFLARE setting is not taken
    assert stored[4] == (True, "aws", 100) and stored[6] == (False, "local", 300)


def test_cloud_settings_unavailable_keep_the_stored_ones_and_schedules_still_sync(db, site, config):
    run(config, T0)
    site.cloud_settings[0]["threshold"] = 1
    site.fail_next(f"{PREFIX}_get_cloud_settings", 1, status=503)
    edit(site, 1, name="Edited")
    result = run_one(config, T1)
    assert result.error is None and counts(result) == (0, 1, 3, 0)
    assert companies()[4] == (True, "aws", 100)
    run(config, T2)
    assert companies()[4] == (True, "aws", 1)


def test_site_without_the_cloud_settings_function_still_syncs_schedules(db, site, config):
    site.remove_function(f"{PREFIX}_get_cloud_settings")
    result = run_one(config, T0)
    assert result.error is None and result.new == 4
    assert companies() == {}


# --- the schedules file ---------------------------------------------------------------------

GOOD_FILE = """\
[[schedule]]
id = 1
name = "Morning reminder"
courseid = 2
frequency = "daily"
timeofday = "09:00"
action_type = "email"
audience = "not_completed"
template_id = "reminder_v1"

[[schedule]]
id = 2
name = "Monday certificates"
courseid = 2
frequency = "weekly"
weekday = 1
timeofday = "17:30:15"
action_type = "certificate"
audience = "completed"
enabled = false
"""

BAD_ENTRY = """
[[schedule]]
id = 7
name = "Broken"
courseid = 2
frequency = "weekly"
weekday = 9
timeofday = "09:00"
action_type = "email"
"""


@pytest.fixture
def schedules_file(tmp_path):
    path = tmp_path / "schedules.toml"
    path.write_text(GOOD_FILE, encoding="utf-8")
    return path


def file_config(path, source="file", **over) -> Config:
    return make_config(source=source, file=path, **over)


def no_moodle():
    raise AssertionError("the file source must not talk to Moodle")


def run_file(config: Config, now: datetime) -> sync.SyncResult:
    (result,) = sync.sync_all(config, no_moodle, now)
    return result


def test_file_schedules_are_stored_with_their_times_of_day(db, schedules_file):
    result = run_file(file_config(schedules_file), T0)
    assert result.source == "file" and result.error is None
    assert counts(result) == (2, 0, 0, 0)
    stored = records("file")
    assert stored[1].data["timeofday"] == 9 * 3600
    assert stored[2].data["timeofday"] == 17 * 3600 + 30 * 60 + 15
    assert (stored[1].enabled, stored[2].enabled) == (True, False)
    assert stored[1].data["cloud_preference"] == "auto"  # the file's default
    assert {r.first_seen_at for r in stored.values()} == {T0}
    assert records("moodle") == {}
    assert counts(run_file(file_config(schedules_file), T1)) == (0, 0, 2, 0)


def test_file_edit_and_removal_are_applied(db, schedules_file):
    config = file_config(schedules_file)
    run_file(config, T0)
    text = GOOD_FILE.replace('"09:00"', '"10:15"')
    schedules_file.write_text(text.split("\n[[schedule]]\nid = 2")[0], encoding="utf-8")
    result = run_file(config, T1)
    assert counts(result) == (0, 1, 0, 1)
    assert records("file")[1].data["timeofday"] == 10 * 3600 + 15 * 60
    assert records("file")[2].deleted_at == T1


def test_malformed_file_entry_is_reported_with_its_position_and_the_rest_sync(
    db, schedules_file, caplog
):
    schedules_file.write_text(GOOD_FILE + BAD_ENTRY, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sidecar.sync"):
        result = run_file(file_config(schedules_file), T0)
    assert counts(result) == (2, 0, 0, 0)
    (message,) = result.skipped
    assert str(schedules_file) in message
    assert "[[schedule]] #3" in message and "schedule 7: weekday:" in message
    assert sorted(records("file")) == [1, 2]
    assert any("[[schedule]] #3" in r.getMessage() for r in caplog.records)


def test_file_entry_malformed_after_a_good_sync_keeps_its_last_good_copy(db, schedules_file):
    config = file_config(schedules_file)
    run_file(config, T0)
    good = records("file")[1]
    schedules_file.write_text(GOOD_FILE.replace('"09:00"', '"9 o\'clock"'), encoding="utf-8")
    result = run_file(config, T1)
    assert counts(result) == (0, 0, 1, 0)
    assert "[[schedule]] #1" in result.skipped[0] and "timeofday" in result.skipped[0]
    kept = records("file")[1]
    assert kept.deleted_at is None and kept.data == good.data


def test_file_entry_without_an_id_is_reported_by_position(db, schedules_file):
    schedules_file.write_text(GOOD_FILE.replace("\nid = 2\n", "\n"), encoding="utf-8")
    result = run_file(file_config(schedules_file), T0)
    assert counts(result) == (1, 0, 0, 0)
    assert "[[schedule]] #2" in result.skipped[0] and "id: required" in result.skipped[0]


@pytest.mark.parametrize(
    ("break_file", "words"),
    [
        pytest.param(lambda p: p.unlink(), "cannot read", id="missing"),
        pytest.param(lambda p: p.write_text("[[schedule]\nid = 1\n"), "invalid TOML",
                     id="invalid-toml"),
        pytest.param(lambda p: p.write_bytes(b"name = \"\xff\"\n"), "invalid TOML",
                     id="not-utf8"),
        pytest.param(lambda p: p.write_text("[schedule]\nid = 1\n"), "array of tables",
                     id="table-not-array"),
    ],
)  # fmt: skip
def test_unreadable_file_changes_nothing_and_records_the_error(
    db, schedules_file, break_file, words
):
    config = file_config(schedules_file)
    run_file(config, T0)
    before = snapshot()
    break_file(schedules_file)
    result = run_file(config, T1)
    assert words in result.error and str(schedules_file) in result.error
    assert snapshot() == before
    assert all(r.deleted_at is None for r in records("file").values())
    state = SyncState.get_by_id("file")
    assert (state.ok_at, state.error, state.error_at) == (T0, result.error, T1)


def test_file_source_without_a_file_set_says_which_key(db):
    result = run_file(make_config(source="file"), T0)
    assert "schedules.file" in result.error


# --- both sources -----------------------------------------------------------------------------


def test_both_sources_keep_moodle_and_file_schedules_apart_with_the_same_id(
    db, sandbox, schedules_file
):
    config = file_config(schedules_file, source="both", moodle={
        "url": sandbox.url, "token": sandbox.site.token, "retry_attempts": 1})  # fmt: skip
    results = run(config, T0)
    assert [(r.source, r.new) for r in results] == [("moodle", 4), ("file", 2)]
    assert records("moodle")[1].name == row_of(sandbox.site, 1)["name"]
    assert records("file")[1].name == "Morning reminder"
    # The file drops its schedule 1: Moodle's schedule 1 is untouched.
    schedules_file.write_text(GOOD_FILE.split("\n[[schedule]]\nid = 2")[0].replace(
        "id = 1", "id = 2", 1), encoding="utf-8")  # fmt: skip
    moodle_result, file_result = run(config, T1)
    assert counts(moodle_result) == (0, 0, 4, 0)
    assert file_result.deleted == 1 and records("file")[1].deleted_at == T1
    assert records("moodle")[1].deleted_at is None
    # Moodle goes down: the file still syncs, Moodle's copies stay as they were.
    moodle_before = [row for row in snapshot() if row[0] == "moodle"]
    sandbox.site.protocol_enabled = False
    schedules_file.write_text(GOOD_FILE, encoding="utf-8")
    moodle_result, file_result = run(config, T2)
    assert moodle_result.error and file_result.error is None
    assert counts(file_result) == (0, 2, 0, 0)  # 1 came back, 2 is schedule 2 again
    assert [row for row in snapshot() if row[0] == "moodle"] == moodle_before


# --- last_sync ------------------------------------------------------------------------------


def test_last_sync_reports_each_source_with_its_error(db, sandbox, schedules_file):
    config = file_config(schedules_file, source="both", moodle={
        "url": sandbox.url, "token": sandbox.site.token, "retry_attempts": 1})  # fmt: skip
    assert sync.last_sync() == {}
    run(config, T0)
    sandbox.site.protocol_enabled = False
    schedules_file.write_text(GOOD_FILE + BAD_ENTRY, encoding="utf-8")
    moodle_result, _ = run(config, T1)
    report = sync.last_sync()
    assert report["moodle"] == {
        "ok_at": "2025-11-18T12:00:00Z",
        "schedules": 4,
        "skipped": 0,
        "error": moodle_result.error,
        "error_at": "2025-11-18T12:05:00Z",
    }
    assert report["file"] == {
        "ok_at": "2025-11-18T12:05:00Z",
        "schedules": 2,
        "skipped": 1,
        "error": None,
        "error_at": None,
    }
