"""Headless Chromium for the tests of the pages people open (verify, unsubscribe, dashboard).

Debian's `chromium` package driven by Playwright for Python: Playwright's own browser download
comes from a CDN that CI cannot reach, so `browser` launches the Chromium found on the machine
(`MOODLE_OFFLOAD_CHROMIUM`, else Debian's binary, else `chromium` on the PATH).

Without Playwright or a Chromium the browser tests SKIP, naming what to install, so the
README's `python -m pytest` works on a machine without apt. CI (`.ci/run`) installs both and
sets `MOODLE_OFFLOAD_REQUIRE_BROWSER=1`: there a missing browser FAILS the tests instead.

Fixtures (re-exported by tests/conftest.py):
- `browser`: one Chromium per test module (a launch costs about half a second).
- `open_page(width=, height=, mobile=)`: a fresh page in its own context (no cookies shared
  between pages), 10 s default timeout. Every page is watched: console errors, uncaught
  exceptions and any request to a host other than 127.0.0.1/localhost (the pages must work
  with no internet: no CDN) fail the test at teardown. When the test fails, each open page
  is screenshotted into the test's tmp_path and the report names the files.
- `page`: `open_page()` at desktop size.

Helpers: `horizontal_overflow(page)`, `tab_to(page, locator)`.
"""

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REQUIRE_ENV = "MOODLE_OFFLOAD_REQUIRE_BROWSER"
CHROMIUM_ENV = "MOODLE_OFFLOAD_CHROMIUM"
#: Debian's binary itself: /usr/bin/chromium is a shell wrapper that adds desktop flags
DEBIAN_CHROMIUM = "/usr/lib/chromium/chromium"
DEFAULT_TIMEOUT_MS = 10_000
DESKTOP = (1280, 800)
PHONE = (390, 844)  # an iPhone 12-15's CSS viewport
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None when the machine has none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: a browser is required here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module. Module-scoped rather than session-scoped so
    Playwright's event loop is gone before the next module's tests (some run asyncio)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    path = find_chromium()
    if path is None:
        where = os.environ.get(CHROMIUM_ENV) or DEBIAN_CHROMIUM
        _unavailable(
            f"no Chromium at {where} nor on the PATH: apt-get install chromium "
            f"(or set {CHROMIUM_ENV} to a Chromium binary)"
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True)
        yield chromium
        chromium.close()


class WatchedPage:
    """What a test's page did wrong: console errors, uncaught exceptions, non-local requests."""

    def __init__(self, page, name: str):
        self.page = page
        self.name = name
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught exception: {exc}"))
        page.context.route("**/*", self._route)

    def _console(self, msg) -> None:
        # a failed load is judged by _response: a page's own 404 is what a test may expect
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.problems.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def _response(self, response) -> None:
        request = response.request
        if response.status >= 400 and not request.is_navigation_request():
            self.problems.append(f"{request.resource_type} {request.url}: {response.status}")

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:  # the pages must work with no internet: a CDN font or script is a bug
            self.problems.append(f"request to a non-local host blocked: {url}")
            route.abort()


@pytest.fixture
def open_page(browser, request, tmp_path):
    """`open_page(width=1280, height=800, mobile=False)`: a new watched page (see the module
    docstring). The status of the page itself is the test's to check; a failed image, style
    or script is a problem. `mobile=True` emulates a phone (meta viewport honoured, touch)."""
    watched: list[WatchedPage] = []

    def open_(width: int = DESKTOP[0], height: int = DESKTOP[1], mobile: bool = False):
        context = browser.new_context(
            viewport={"width": width, "height": height},
            is_mobile=mobile,
            has_touch=mobile,
            device_scale_factor=1,
            locale="en-GB",
            timezone_id="UTC",
        )
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = context.new_page()
        watched.append(WatchedPage(page, f"page{len(watched) + 1}-{width}x{height}"))
        return page

    request.node._browser_pages = (watched, tmp_path)
    yield open_
    problems = [f"{w.name}: {p}" for w in watched for p in w.problems]
    for w in watched:
        w.page.context.close()
    if problems and not getattr(request.node, "_browser_failed", False):
        pytest.fail("the browser reported:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def page(open_page):
    """A watched page at desktop size (1280x800)."""
    return open_page()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test: screenshot each open page into its tmp_path, name the files."""
    outcome = yield
    report = outcome.get_result()
    pages = getattr(item, "_browser_pages", None)
    if pages is None or report.when != "call" or not report.failed:
        return
    item._browser_failed = True
    watched, tmp_path = pages
    shots = []
    for w in watched:
        path = Path(tmp_path) / f"failure-{w.name}.png"
        try:
            w.page.screenshot(path=path, full_page=True)
        except Exception as exc:  # noqa: BLE001 - a closed page must not hide the failure
            shots.append(f"{w.name}: no screenshot ({exc})")
            continue
        shots.append(str(path))
    lines = shots + [f"{w.name}: {p}" for w in watched for p in w.problems]
    report.sections.append(("browser", "\n".join(lines)))


def horizontal_overflow(page) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no horizontal scroll)."""
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )


def tab_to(page, target, max_tabs: int = 20) -> int:
    """Press Tab until `target` (a Locator) has the focus; returns how many presses it took.
    Fails when it is not reached in `max_tabs` presses (not keyboard reachable)."""
    for presses in range(1, max_tabs + 1):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return presses
    pytest.fail(f"{target} not reached with {max_tabs} presses of Tab", pytrace=False)
