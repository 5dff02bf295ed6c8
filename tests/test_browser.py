"""The browser fixtures themselves (tests/browser.py): what they catch on a page."""

from werkzeug.wrappers import Response

from sidecar.web.server import HttpServer


def test_console_errors_failed_loads_and_non_local_requests_are_caught(page, request):
    html = (
        "<!doctype html><title>t</title><h1>page</h1>"
        "<script>console.error('boom')</script>"
        "<img src=/missing.png><script src=https://cdn.example.net/lib.js></script>"
    )

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/":
            return Response(html, mimetype="text/html")(environ, start_response)
        return Response("no", status=404)(environ, start_response)

    srv = HttpServer(app, "127.0.0.1", 0)
    srv.start()
    try:
        page.goto(f"{srv.url}/")
        page.wait_for_load_state("load")
    finally:
        srv.stop()
    (watched,), _ = request.node._browser_pages
    problems = sorted(watched.problems)
    watched.problems.clear()  # caught, as asserted here: the teardown has nothing to fail on
    assert problems == [
        "console error: boom (" + srv.url + "/)",
        "image " + srv.url + "/missing.png: 404",
        "request to a non-local host blocked: https://cdn.example.net/lib.js",
    ]
