"""The sandbox over real HTTP: every function answers in its declared structure.

The structure checker here is written from the node format of functions.json alone (it
shares no code with the sandbox's cleaner), so a cleaner bug shows up as a failure.
Helpers and the `moodle` fixture are imported by the other test_sandbox_* modules.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import requests

import moodle_ws.sandbox
from moodle_ws.sandbox import SandboxServer, Site, SiteSpec, generate_site

# Moodle's own requests and answers (errors, login/token.php, function answers), derived from
# its PHP source; docs/moodle-reference.md describes the protocol they show.
EXAMPLES = Path(__file__).parent / "reference"
PACKAGE = Path(moodle_ws.sandbox.__file__).parent
TOKEN = object()  # "use the site's main token"


def bracket_fields(params: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested params as PHP form fields (`users[0][id]=5`), written independently of the client."""
    out: list[tuple[str, str]] = []
    if isinstance(params, dict):
        for key, value in params.items():
            out += bracket_fields(value, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(params, list):
        for i, value in enumerate(params):
            out += bracket_fields(value, f"{prefix}[{i}]")
    elif isinstance(params, bool):
        out.append((prefix, "1" if params else "0"))
    else:
        out.append((prefix, str(params)))
    return out


class Moodle:
    """A running sandbox and plain-`requests` helpers to talk to it."""

    def __init__(self, site: Site, server: SandboxServer):
        self.site, self.server = site, server
        self.rest = server.url + "/webservice/rest/server.php"
        self.token_url = server.url + "/login/token.php"

    def post(
        self,
        function: str | None = None,
        params: dict | None = None,
        *,
        token: Any = TOKEN,
        fmt: str | None = "json",
        extra: list[tuple[str, str]] = (),
    ) -> requests.Response:
        data: list[tuple[str, str]] = []
        if token is not None:
            data.append(("wstoken", self.site.token if token is TOKEN else token))
        if function is not None:
            data.append(("wsfunction", function))
        if fmt is not None:
            data.append(("moodlewsrestformat", fmt))
        data += bracket_fields(params or {}) + list(extra)
        return requests.post(self.rest, data=data, timeout=60)

    def call(self, function: str, **params: Any) -> Any:
        """A call expected to succeed: the decoded JSON."""
        response = self.post(function, params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert not (isinstance(body, dict) and "exception" in body), body
        return body

    def error(self, function: str | None, **params: Any) -> dict:
        """A call expected to fail: the decoded error JSON."""
        response = self.post(function, params)
        assert response.status_code == 200
        body = response.json()
        assert isinstance(body, dict) and "exception" in body, body
        return body


def make_moodle(**spec: Any):
    site = generate_site(SiteSpec(**{"seed": 7, "learners": 60, **spec}))
    server = SandboxServer(site).start()
    return Moodle(site, server)


@pytest.fixture
def moodle():
    m = make_moodle()
    yield m
    m.server.stop()


def opts(**values):
    return [{"name": k, "value": v} for k, v in values.items()]


def enrolled(m, courseid=None, **options):
    return m.call(
        "core_enrol_get_enrolled_users",
        courseid=courseid or m.site.main_course_id,
        options=opts(**options),
    )


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text("utf-8"))


def _form(ex: dict) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in ex["request"]["form"]]


def replay(m, ex: dict, token_from_example: bool = False) -> requests.Response:
    """Send the example's form, with the site's token instead of the example's."""
    form = _form(ex)
    if not token_from_example:
        form = [(k, m.site.token if k == "wstoken" else v) for k, v in form]
    return requests.post(m.rest, data=form, timeout=30)


# --- the independent structure checker -----------------------------------------------


def structure_errors(node: dict, value: Any, path: str = "$") -> list[str]:
    """Where `value` departs from the declared node (functions.json format)."""
    kind = node["kind"]
    if kind == "value":
        if value is None:
            return [] if node.get("nullable", True) else [f"{path}: null where not nullable"]
        ptype = node["type"]
        if ptype == "PARAM_INT":
            ok = type(value) is int
        elif ptype == "PARAM_BOOL":
            ok = type(value) is bool
        elif ptype == "PARAM_FLOAT":
            ok = type(value) is float
        elif ptype == "PARAM_RAW":
            ok = type(value) in (str, int, float, bool)
        else:
            ok = type(value) is str
        return [] if ok else [f"{path}: {type(value).__name__} {value!r} for {ptype}"]
    if kind == "list":
        if type(value) is not list:
            return [f"{path}: expected a JSON list, got {type(value).__name__}"]
        errors: list[str] = []
        for i, item in enumerate(value):
            errors += structure_errors(node["items"], item, f"{path}[{i}]")
        return errors
    keys: dict = node["keys"]
    needed = [k for k, sub in keys.items() if sub["required"] == "required"]
    needed += [
        k for k, sub in keys.items() if sub["required"] == "default" and sub["kind"] == "value"
    ]
    if value == [] and not needed:
        return []  # PHP writes an empty array as [] even for an object
    if type(value) is not dict:
        return [f"{path}: expected a JSON object, got {type(value).__name__}"]
    errors = [f"{path}.{k}: undeclared key" for k in value if k not in keys]
    errors += [f"{path}.{k}: missing" for k in needed if k not in value]
    order = [k for k in keys if k in value]
    if [k for k in value if k in keys] != order:
        errors.append(f"{path}: keys {list(value)} not in declaration order {order}")
    for k, sub in keys.items():
        if k in value:
            errors += structure_errors(sub, value[k], f"{path}.{k}")
    return errors


def definitions(prefix: str = "local_manireports") -> dict[str, dict]:
    raw = json.loads((PACKAGE / "functions.json").read_text("utf-8"))
    companion = json.loads((PACKAGE / "companion.json").read_text("utf-8"))
    defs = {f["name"]: f for f in raw["functions"] + raw["iomad"]["functions"]}
    defs.update({f"{prefix}_{f['name']}": f for f in companion["functions"]})
    return defs


# --- data the recipes need -----------------------------------------------------------


def active_learner(site: Site, courseid: int | None = None) -> int:
    courseid = courseid or site.main_course_id
    enrolled = site.enrolments[courseid]
    return next(u for u in site.learner_ids if u in enrolled and enrolled[u].status == 0)


def free_seat(site: Site) -> tuple[int, int, int]:
    """(licenseid, userid, courseid) that allocate_licenses accepts."""
    lic = next(
        x
        for x in site.licenses.values()
        if x.allocation > site.license_used(x.id) and x.expirydate > site.now()
    )
    taken = {a.userid for a in site.allocations if a.licenseid == lic.id}
    uid = next(
        r.userid
        for r in site.company_users
        if r.companyid == lic.companyid
        and r.userid not in taken
        and not site.users[r.userid].suspended
    )
    return lic.id, uid, lic.courses[0]


def unused_seat(site: Site) -> tuple[int, int, int]:
    a = next(a for a in site.allocations if not a.isusing and not site.users[a.userid].suspended)
    return a.licenseid, a.userid, a.licensecourseid


def company_track(site: Site) -> dict[str, int]:
    rows = {r.userid: r.companyid for r in site.company_users}
    track = next(t for t in site.tracks.values() if t.userid in rows)
    return {
        "companyid": rows[track.userid],
        "userid": track.userid,
        "courseid": track.courseid,
        "trackid": track.id,
        "licenseid": track.licenseid,
    }


def _company_departments(site: Site) -> list[int]:
    first = min(site.companies)
    return [d.id for d in site.departments.values() if d.company == first]


def _setup_unallocate(site: Site) -> None:
    site.iomad_unallocate_broken = False


RECIPES = {
    "core_webservice_get_site_info": lambda s: {},
    "core_enrol_get_enrolled_users": lambda s: {"courseid": s.main_course_id},
    "core_user_get_users": lambda s: {"criteria": [{"key": "email", "value": "%example.org"}]},
    "core_user_get_users_by_field": lambda s: {"field": "id", "values": s.learner_ids[:5]},
    "core_user_update_users": lambda s: {
        "users": [
            {
                "id": active_learner(s),
                "password": "Tmp#2024-k7Qx",
                "preferences": [{"type": "auth_forcepasswordchange", "value": "1"}],
            }
        ]
    },
    "core_user_create_users": lambda s: {
        "users": [
            {
                "username": "dana.lee",
                "createpassword": 1,
                "firstname": "Dana",
                "lastname": "Lee",
                "email": "dana.lee@example.com",
                "customfields": [{"type": "region", "value": "North"}],
            }
        ]
    },
    "core_completion_get_course_completion_status": lambda s: {
        "courseid": s.main_course_id,
        "userid": active_learner(s),
    },
    "core_completion_get_activities_completion_status": lambda s: {
        "courseid": s.main_course_id,
        "userid": active_learner(s),
    },
    "core_course_get_courses": lambda s: {},
    "core_course_get_courses_by_field": lambda s: {},
    "core_course_get_contents": lambda s: {"courseid": s.main_course_id},
    "core_message_send_instant_messages": lambda s: {
        "messages": [
            {
                "touserid": active_learner(s),
                "text": "<p>Hello</p>",
                "textformat": 1,
                "clientmsgid": "m-1",
            }
        ]
    },
    "tool_mobile_call_external_functions": lambda s: {
        "requests": [
            {"function": "core_webservice_get_site_info"},
            {
                "function": "core_completion_get_course_completion_status",
                "arguments": json.dumps(
                    {"courseid": s.main_course_id, "userid": active_learner(s)}
                ),
            },
        ]
    },
    "block_iomad_company_admin_get_companies": lambda s: {
        "criteria": [{"key": "name", "value": ""}]
    },
    "block_iomad_company_admin_get_departments": lambda s: {
        "criteria": [{"key": "company", "value": str(min(s.companies))}]
    },
    "block_iomad_company_admin_get_department_users": lambda s: {
        "departmentids": _company_departments(s)
    },
    "block_iomad_company_admin_get_user_companies": lambda s: {"userid": s.company_users[0].userid},
    "block_iomad_company_admin_get_license_info": lambda s: {
        "criteria": [{"key": "companyid", "value": str(min(s.companies))}]
    },
    "block_iomad_company_admin_get_license_from_id": lambda s: {"licenseid": min(s.licenses)},
    "block_iomad_company_admin_allocate_licenses": lambda s: {
        "licenses": [
            dict(zip(("licenseid", "userid", "licensecourseid"), free_seat(s), strict=True))
        ]
    },
    "block_iomad_company_admin_unallocate_licenses": lambda s: {
        "licenses": [
            dict(zip(("licenseid", "userid", "licensecourseid"), unused_seat(s), strict=True))
        ]
    },
    "block_iomad_company_admin_check_enrolment": lambda s: {
        "criteria": [
            {"userid": active_learner(s), "courseid": s.main_course_id},
            {"userid": s.outsider_user_id, "courseid": s.main_course_id},
        ]
    },
    "local_iomad_licenserevoke_user_course": company_track,
    "local_iomad_restrict_email_template": lambda s: {
        "template": f"c.{min(s.companies)}.e.completion_course_user",
        "value": 0,
        "companyid": min(s.companies),
        "page": 0,
        "perpage": 30,
        "lang": "en",
    },
    "local_manireports_get_schedules": lambda s: {},
    "local_manireports_get_cloud_settings": lambda s: {},
    "local_manireports_get_course_completions": lambda s: {"courseid": s.main_course_id},
    "local_manireports_get_new_users": lambda s: {"since": 0, "companyid": 0},
    "block_iomad_company_admin_assign_users": lambda s: {
        "users": [{"userid": active_learner(s), "companyid": min(s.companies)}]
    },
    "local_manireports_record_certificate": lambda s: {
        "userid": active_learner(s),
        "courseid": s.main_course_id,
        "url": "https://offload.example/certificates/ABC123",
        "jobid": "job-1",
    },
    "local_manireports_get_license_allocations": lambda s: {"since": 0, "companyid": 0},
}
SETUP = {"block_iomad_company_admin_unallocate_licenses": _setup_unallocate}


def test_every_served_function_has_a_recipe():
    assert set(RECIPES) == set(definitions())


ANSWERS = sorted(p.name for p in EXAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", ANSWERS)
def test_functions_json_declares_the_structure_of_moodles_example_answer(name):
    # The declarations the sandbox serves and the wrappers are checked against must describe
    # what Moodle really answers: a key renamed, dropped or retyped in functions.json fails here.
    function = name.removesuffix(".json").split("__")[0]
    returns = definitions()[function]["returns"]
    assert structure_errors(returns, example(name)["response"]["json"]) == []


@pytest.mark.parametrize("function", sorted(definitions()))
def test_successful_call_matches_declared_structure(moodle, function):
    site = moodle.site
    SETUP.get(function, lambda s: None)(site)
    answer = moodle.call(function, **RECIPES[function](site))
    returns = definitions()[function]["returns"]
    assert structure_errors(returns, answer) == []
    if function == "tool_mobile_call_external_functions":
        inner = [json.loads(r["data"]) for r in answer["responses"]]
        assert (
            structure_errors(definitions()["core_webservice_get_site_info"]["returns"], inner[0])
            == []
        )
        status = definitions()["core_completion_get_course_completion_status"]["returns"]
        assert structure_errors(status, inner[1]) == []


def test_checker_catches_wrong_types_order_and_unknown_keys():
    node = definitions()["core_completion_get_course_completion_status"]["returns"]
    good = {"completionstatus": {"completed": True, "aggregation": 1, "completions": []}}
    assert structure_errors(node, good) == []
    assert structure_errors(
        node, {"completionstatus": {"aggregation": 1, "completed": True, "completions": []}}
    )
    assert structure_errors(
        node, {"completionstatus": {"completed": 1, "aggregation": 1, "completions": []}}
    )
    assert structure_errors(node, {**good, "extra": 1})
    assert structure_errors(node, {})


# --- answers shaped like the reference examples ----------------------------------------


def _key_orders(ours: Any, theirs: Any, path: str = "$") -> list[str]:
    """Keys both have must come in the same order, with the same JSON types, recursively."""
    problems = []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        common = [k for k in theirs if k in ours]
        if [k for k in ours if k in theirs] != common:
            problems.append(f"{path}: order {list(ours)} vs {list(theirs)}")
        for k in common:
            problems += _key_orders(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(ours, list) and isinstance(theirs, list):
        if ours and theirs:
            problems += _key_orders(ours[0], theirs[0], f"{path}[0]")
    elif theirs is not None and ours is not None and type(ours) is not type(theirs):
        problems.append(f"{path}: {type(ours).__name__} vs {type(theirs).__name__}")
    return problems


SHAPED = [  # examples whose answer we compare key by key (file name = function name)
    "core_webservice_get_site_info",
    "core_course_get_courses_by_field",
    "core_course_get_contents",
    "core_course_get_courses",
    "core_completion_get_activities_completion_status",
    "core_completion_get_course_completion_status",
    "core_user_get_users",
    "core_user_get_users_by_field",
    "block_iomad_company_admin_get_companies",
    "block_iomad_company_admin_get_license_from_id",
    "block_iomad_company_admin_get_departments",
    "block_iomad_company_admin_get_department_users",
    "core_message_send_instant_messages",
]


@pytest.mark.parametrize("function", SHAPED)
def test_answer_keys_come_in_the_examples_order(moodle, function):
    params = RECIPES[function](moodle.site)
    if function == "core_course_get_courses_by_field":
        params = {"field": "id", "value": moodle.site.main_course_id}
    ours = moodle.call(function, **params)
    assert _key_orders(ours, example(f"{function}.json")["response"]["json"]) == []
