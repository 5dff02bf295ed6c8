"""A faithful fake Moodle over real HTTP, for the demo, client integration tests and benchmarks.

    from moodle_ws.sandbox import SiteSpec, generate_site, SandboxServer
    site = generate_site(SiteSpec(seed=1, learners=500, courses=3, activities_per_course=4,
                                  companies=2, completed_fraction=0.4, now=1764633600))
    with SandboxServer(site) as server:        # 127.0.0.1, free port, waitress threads
        requests.post(server.url + "/webservice/rest/server.php",
                      data={"wstoken": site.token, "moodlewsrestformat": "json",
                            "wsfunction": "core_webservice_get_site_info"})

It answers /webservice/rest/server.php and /login/token.php as REFERENCE.md describes:
Moodle's order of checks, error bodies, strict validate_parameters, clean_returnvalue and
PHP's json_encode, for every function of functions.json (core and IOMAD) and the four
companion functions. This package imports nothing from the rest of the project.

The site (see `Site`): `token`, `token_user_id`, `login_user` / `login_service` for
token.php, `main_course_id`, `course_completion_disabled_id`, `course_no_criteria_id`,
`learner_ids`, `teacher_ids`, `outsider_user_id`, `deleted_user_id`, and the tables
(`users`, `courses`, `enrolments`, `course_completions`, `cm_states`, IOMAD ones...).

Knobs (attributes, flip them on a live site): `protocol_enabled`, `webservices_enabled`,
`maintenance`, `debug` (False / True / "developer"), `messaging`, `completion_enabled`,
`max_input_vars`, `iomad_installed`, `companion_installed`, `companion_unmailable`,
`set_companion_prefix()`,
`add_function()` / `remove_function()`, `capabilities`, `expire_token()`,
`token_user.suspended` (and deleted, confirmed, auth), `password_expired_users`,
`hiddenuserfields`,
`legacy_exception_names`, `https`, `update_users_warnings`, `password_policy`,
`iomad_unallocate_broken`, `iomad_user_companies_broken`, `latency`,
`latency_by_function`, `fail_next()`. Counters: `request_count`, `requests_by_function`,
`inner_requests_by_function`, `bytes_served`, `bytes_by_function` (response bodies),
`reset_counts()`.
"""

from moodle_ws.sandbox.app import SandboxApp
from moodle_ws.sandbox.seed import DEFAULT_NOW, SiteSpec, generate_site
from moodle_ws.sandbox.server import SandboxServer
from moodle_ws.sandbox.site import Site

__all__ = ["DEFAULT_NOW", "SandboxApp", "SandboxServer", "Site", "SiteSpec", "generate_site"]
