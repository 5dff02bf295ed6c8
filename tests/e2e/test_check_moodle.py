"""`moodle-offload check` against the Moodle sandbox, tried as a new administrator would:
each failure is one line that says how to fix it, and exit 0 only when all required holds."""

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

from .conftest import cli, free_port, write_config


@pytest.fixture(scope="module")
def moodle():
    site = generate_site(SiteSpec(seed=3, learners=20, courses=2, companies=1))
    with SandboxServer(site) as server:
        server.site = site
        yield server


def config_for(tmp_path, url, token):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + f'[moodle]\nurl = "{url}"\ntoken = "{token}"\n')
    return path


def check(tmp_path, url, token):
    config = config_for(tmp_path, url, token)
    cli(config, "db", "upgrade")
    return cli(config, "check", check=False)


def test_a_working_token_passes_and_lists_the_site_and_companion(tmp_path, moodle):
    proc = check(tmp_path, moodle.url, moodle.site.token)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   moodle:" in proc.stdout and "token user" in proc.stdout
    assert "ok   companion: local_manireports_get_schedules found" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_a_required_function_missing_fails_naming_it_and_what_stops(tmp_path, moodle):
    moodle.site.remove_function("core_enrol_get_enrolled_users")
    try:
        proc = check(tmp_path, moodle.url, moodle.site.token)
    finally:
        moodle.site.add_function("core_enrol_get_enrolled_users")
    assert proc.returncode == 1
    line = next(x for x in proc.stdout.splitlines() if "core_enrol_get_enrolled_users" in x)
    assert line.startswith("FAIL") and "learners cannot be read" in line
    assert "External services" in line


def test_a_missing_optional_function_is_reported_with_what_it_disables_and_passes(tmp_path, moodle):
    moodle.site.remove_function("local_manireports_get_course_completions")
    moodle.site.remove_function("tool_mobile_call_external_functions")
    try:
        proc = check(tmp_path, moodle.url, moodle.site.token)
    finally:
        moodle.site.add_function("local_manireports_get_course_completions")
        moodle.site.add_function("tool_mobile_call_external_functions")
    assert proc.returncode == 0, proc.stdout
    assert "skip local_manireports_get_course_completions" in proc.stdout
    assert "one request per learner" in proc.stdout


def test_a_wrong_token_fails_in_one_line_naming_the_key(tmp_path, moodle):
    proc = check(tmp_path, moodle.url, "0" * 32)
    assert proc.returncode == 1
    fails = [x for x in proc.stdout.splitlines() if x.startswith("FAIL")]
    assert len(fails) == 1 and "moodle.token" in fails[0]
    assert "0" * 32 not in proc.stdout + proc.stderr


def test_disabled_web_services_say_where_to_enable_them(tmp_path, moodle):
    moodle.site.protocol_enabled = False
    try:
        proc = check(tmp_path, moodle.url, moodle.site.token)
    finally:
        moodle.site.protocol_enabled = True
    assert proc.returncode == 1
    assert "Enable web services" in proc.stdout and "Manage protocols" in proc.stdout


def test_an_unreachable_moodle_fails_quickly_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = check(tmp_path, url, "a" * 32)
    assert proc.returncode == 1
    assert f"FAIL moodle: core_webservice_get_site_info: cannot connect to {url}" in proc.stdout
