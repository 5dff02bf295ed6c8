"""The dashboard's SVG charts: what they draw, what they say to a screen reader, and that
a real browser paints them at a phone's width."""

import io
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest
from PIL import Image  # pillow: reportlab's, for xhtml2pdf
from werkzeug.wrappers import Response

from sidecar.activity import Hour, Point
from sidecar.web import charts
from sidecar.web.server import HttpServer
from tests.browser import PHONE, horizontal_overflow

SVG = "{http://www.w3.org/2000/svg}"
FIRST = datetime(2025, 11, 11, 13, 0)  # the week up to Tue 18 Nov 12:59 UTC


def week(values: dict[int, tuple[int, int]]) -> list[Hour]:
    """168 hours from FIRST; `values`: {hour index: (sent, failed)}, the rest zero."""
    return [Hour(FIRST + timedelta(hours=i), *values.get(i, (0, 0))) for i in range(168)]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML: everything escaped
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert re.fullmatch(r"0 0 \d+ \d+", root.get("viewBox")) and root.get("width") == "100%"
    assert "<script" not in svg and "href" not in svg and "url(" not in svg  # nothing fetched
    return root


def bars(root: ET.Element, cls: str) -> dict[int, float]:
    """{hour index: drawn height} of the bars of one class."""
    groups = root.findall(f"{SVG}g[@class='hour']")
    return {
        i: float(rect.get("height"))
        for i, g in enumerate(groups)
        for rect in g.findall(f"{SVG}rect[@class='{cls}']")
    }


def test_bar_heights_are_proportional_to_the_mail_of_each_hour_and_failed_sits_on_sent():
    data = {0: (10, 0), 5: (40, 2), 100: (200, 20), 167: (1, 1)}
    root = parse(charts.hourly_chart(week(data)))

    sent, failed = bars(root, "sent"), bars(root, "failed")
    assert set(sent) == {0, 5, 100, 167} and set(failed) == {5, 100, 167}
    per_mail = sent[100] / 200
    for i, (s, f) in data.items():
        assert sent[i] == pytest.approx(s * per_mail, abs=0.02)
        assert failed.get(i, 0) == pytest.approx(f * per_mail, abs=0.02)
    group = root.findall(f"{SVG}g[@class='hour']")[100]
    s_rect, f_rect = (
        group.find(f"{SVG}rect[@class='sent']"),
        group.find(f"{SVG}rect[@class='failed']"),
    )
    assert float(f_rect.get("y")) + float(f_rect.get("height")) == pytest.approx(
        float(s_rect.get("y")), abs=0.02
    )
    ticks = [t.text for t in root.findall(f"{SVG}text[@class='tick']")]
    assert ticks[0] == "0" and int(ticks[-1].replace(",", "")) >= 220  # the tallest fits


def test_every_hour_has_a_tooltip_and_the_label_gives_the_totals():
    root = parse(charts.hourly_chart(week({5: (40, 2), 100: (1234, 20)})))

    titles = [g.find(f"{SVG}title").text for g in root.findall(f"{SVG}g[@class='hour']")]
    assert len(titles) == 168
    assert titles[5] == "Tue 11 Nov 18:00–19:00 UTC: 40 sent, 2 failed"
    assert titles[100] == "Sat 15 Nov 17:00–18:00 UTC: 1,234 sent, 20 failed"
    assert titles[6] == "Tue 11 Nov 19:00–20:00 UTC: 0 sent, 0 failed"
    assert root.get("aria-label") == (
        "Mail per hour over the last 7 days (Tue 11 Nov 13:00 to Tue 18 Nov 13:00 UTC): "
        "1,274 sent, 22 failed."
    )


def test_days_are_separated_at_midnight_and_named_under_their_hours():
    root = parse(charts.hourly_chart(week({0: (1, 0)})))
    # the window starts Tue 11 13:00: midnights before Wed 12 .. Tue 18
    assert len(root.findall(f"{SVG}line[@class='day']")) == 7
    names = [t.text for t in root.findall(f"{SVG}text[@class='day-label']")]
    # Tue 11 has 11 hours in the window: too few for its name; Tue 18 has 13
    assert names == ["Wed 12", "Thu 13", "Fri 14", "Sat 15", "Sun 16", "Mon 17", "Tue 18"]


def test_a_week_without_mail_says_so_instead_of_drawing_bars():
    root = parse(charts.hourly_chart(week({})))
    assert root.findall(f".//{SVG}rect[@class='sent']") == []
    assert [t.text for t in root.findall(f"{SVG}text[@class='empty']")] == [
        "No mail in the last 7 days"
    ]
    assert "no mail in the last 7 days" in root.get("aria-label")


def test_a_jobs_progress_is_stacked_areas_up_to_its_total():
    start = datetime(2025, 11, 18, 6, 0)
    points = [Point(start + timedelta(minutes=10 * i), 100 * i, 2 * i) for i in range(6)]
    root = parse(charts.progress_chart(points, total=600))

    assert root.get("aria-label") == (
        "Progress from Tue 18 Nov 06:00 to Tue 18 Nov 06:50 UTC: 500 sent and 10 failed of 600."
    )
    sent = root.find(f"{SVG}polygon[@class='sent']")
    failed = root.find(f"{SVG}polygon[@class='failed']")
    assert sent.find(f"{SVG}title").text == "500 sent" and failed.find(f"{SVG}title").text == (
        "10 failed"
    )
    coords = [tuple(map(float, c.split(","))) for c in sent.get("points").split()]
    top_edge = coords[: len(points)]
    baseline = max(y for _, y in coords)
    total_y = float(root.find(f"{SVG}line[@class='total']").get("y1"))
    per_mail = (baseline - total_y) / 600
    for (_, y), p in zip(top_edge, points, strict=True):
        assert baseline - y == pytest.approx(p.sent * per_mail, abs=0.02)
    assert [x for x, _ in top_edge] == sorted(x for x, _ in top_edge)  # time runs right
    tips = [c.find(f"{SVG}title").text for c in root.findall(f"{SVG}circle[@class='point']")]
    assert tips[-1] == "Tue 18 Nov 06:50:00 UTC: 500 sent, 10 failed"


def test_a_job_with_nothing_done_yet_says_so():
    at = datetime(2025, 11, 18, 6, 0)
    root = parse(charts.progress_chart([Point(at, 0, 0), Point(at + timedelta(1), 0, 0)], 50))
    assert [t.text for t in root.findall(f"{SVG}text[@class='empty']")] == [
        "Nothing sent or failed yet"
    ]
    assert root.get("aria-label") == "Progress: nothing sent or failed yet, of 50."


def test_the_chart_is_painted_at_a_phones_width_and_a_bar_is_where_it_is_drawn(open_page):
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<title>chart</title><body style='margin:0;padding:8px'>"
        f"<figure style='margin:0'>{charts.hourly_chart(week({100: (300, 30), 20: (50, 0)}))}"
        "</figure></body></html>"
    )

    def app(environ, start_response):
        return Response(html, mimetype="text/html")(environ, start_response)

    srv = HttpServer(app, "127.0.0.1", 0)
    srv.start()
    try:
        page = open_page(*PHONE, mobile=True)
        page.goto(f"{srv.url}/")
        svg = page.locator("svg")
        box = svg.bounding_box()
        assert box["width"] == pytest.approx(PHONE[0] - 16, abs=1)  # the width it was given
        assert box["height"] == pytest.approx(box["width"] * charts.HEIGHT / charts.WIDTH, abs=1)
        assert horizontal_overflow(page) == 0
        big = page.locator("g.hour rect.sent").nth(1).bounding_box()
        small = page.locator("g.hour rect.sent").nth(0).bounding_box()
        assert big["height"] > 0 and big["height"] / small["height"] == pytest.approx(6, rel=0.02)
        centre = (big["x"] + big["width"] / 2, big["y"] + big["height"] / 2)
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y).getAttribute('class')",
                            list(centre))  # fmt: skip
        assert hit == "sent"  # painted there, on top
        assert page.get_by_role("img").get_attribute("aria-label").endswith("350 sent, 30 failed.")
        pixels = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        red, green, blue = pixels.getpixel(tuple(int(c) for c in centre))
        assert blue - red > 60 and blue - green > 40  # blue: the sent colour (anti-aliased)
        scale = box["width"] / charts.WIDTH  # CSS px per unit of the drawing
        empty_hour = box["x"] + (charts.LEFT + 70.5 * charts.PLOT_W / 168) * scale
        assert pixels.getpixel((int(empty_hour), int(centre[1]))) == (255, 255, 255)
    finally:
        srv.stop()
