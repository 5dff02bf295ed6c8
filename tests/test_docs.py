"""The docs/ pages cover what the code has: they fail when a key, command, option, endpoint,
status or Moodle function is added or removed without its documentation.

The pages are written for people; these tests only read the structure they share (headings
naming a section, command or endpoint, and table rows starting with a `name`).
"""

import re
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from moodle_ws import companion
from sidecar import moodle
from sidecar.cli import main
from sidecar.config import Config, model_of
from sidecar.status import JobStatus, RecipientStatus
from sidecar.web.app import ROUTES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str, heading: re.Pattern) -> dict[str, str]:
    """The text under each heading that `heading` matches, by the heading's first group."""
    out: dict[str, str] = {}
    matches = list(re.finditer(r"^#+ .*$", text, re.M))
    for i, m in enumerate(matches):
        found = heading.fullmatch(m.group(0))
        if found:
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            out[found.group(1)] = text[m.end() : end]
    return out


def row_names(text: str) -> set[str]:
    """The `name` in the first cell of each table row."""
    return set(re.findall(r"^\| `([^`]+)`", text, re.M))


def config_sections(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, set[str]]:
    """Dotted section name -> its keys (by their TOML name), from the pydantic models."""
    out: dict[str, set[str]] = {}
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = model_of(field.annotation)
        if sub is None:
            keys.add(key)
        else:
            out.update(config_sections(sub, f"{prefix}{key}."))
    if prefix and keys:  # [providers] holds only tables: it has no heading of its own
        out[prefix.rstrip(".")] = keys
    return out


def test_configuration_md_documents_every_config_key_and_no_other():
    documented = sections(read("configuration.md"), re.compile(r"#+ `\[\[?([a-z_.]+)\]\]?`"))
    wanted = config_sections()
    assert sorted(documented) == sorted(wanted), "one heading `[section]` per config section"
    for section, keys in wanted.items():
        assert row_names(documented[section]) == keys, f"[{section}]"


def cli_commands(group: click.Group = main, path: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        full = f"{path} {name}".strip()
        if isinstance(cmd, click.Group):
            out.update(cli_commands(cmd, full))
        else:
            out[full] = cmd
    return out


CLI_HEADING = re.compile(r"#+ `moodle-offload ([a-z -]+?)(?: [A-Z]+)?`")


def test_cli_md_has_a_section_for_every_command_and_no_other():
    documented = sections(read("cli.md"), CLI_HEADING)
    assert sorted(documented) == sorted(cli_commands())


@pytest.mark.parametrize("command", sorted(cli_commands()))
def test_cli_md_documents_every_option_of_the_command(command):
    text = sections(read("cli.md"), CLI_HEADING)[command]
    for param in cli_commands()[command].params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            assert f"`{longest}" in text or f", {longest}" in text, f"{command} {longest}"


def served_endpoints(api: bool, pages: bool = False) -> set[str]:
    """ "METHOD /path" of each route: those under /api/v1 (`api`), the dashboard's pages
    (`pages`, endpoints `page.*`), or all the others."""
    served = set()
    for rule in ROUTES.iter_rules():
        is_page = rule.endpoint.startswith("page.")
        if rule.rule.startswith("/api/v1/") == api and is_page == pages:
            path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {f"{m} {path}" for m in rule.methods - {"HEAD", "OPTIONS"}}
    return served


ENDPOINT_HEADING = re.compile(r"## `([A-Z]+ /\S*)`")


def test_http_md_documents_every_endpoint_and_no_other():
    assert set(sections(read("http.md"), ENDPOINT_HEADING)) == served_endpoints(api=False)


def test_dashboard_md_documents_every_page_and_no_other():
    assert set(sections(read("dashboard.md"), ENDPOINT_HEADING)) == served_endpoints(
        api=False, pages=True
    )


def test_api_md_documents_every_api_endpoint_and_no_other():
    assert set(sections(read("api.md"), ENDPOINT_HEADING)) == served_endpoints(api=True)


def test_statuses_md_documents_every_job_and_recipient_status():
    text = read("statuses.md")
    job, recipient = sections(text, re.compile(r"## (Job|Recipient)")).values()
    assert row_names(job) == {s.value for s in JobStatus}
    assert row_names(recipient) == {s.value for s in RecipientStatus}


def test_moodle_md_documents_every_function_check_asks_for():
    text = read("moodle.md")
    functions = {**moodle.REQUIRED, **moodle.OPTIONAL, **moodle.IOMAD}
    assert set(functions) <= row_names(text)
    headed = set(sections(text, re.compile(r"### `\{prefix\}_(\w+)`")))
    assert headed == set(companion.FUNCTIONS)


LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path written in backticks that climbs out of the page's folder, e.g. `../x/y.md`.
CLIMBING_PATH = re.compile(r"`(\.\./[^`\s]*)`")


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))]
)
def test_every_relative_link_resolves_inside_the_repository(page):
    source = ROOT / page
    text = source.read_text(encoding="utf-8")
    for target in LINK.findall(text) + CLIMBING_PATH.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (source.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page}: {target} leaves the repository"
        assert path.exists(), f"{page}: {target} does not exist"


def test_readme_lists_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
