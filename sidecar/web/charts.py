"""The dashboard's charts, drawn on the server as SVG strings: no JavaScript, no fonts or
files to fetch (the page works with no internet), every text escaped.

- `hourly_chart(hours)`: mail sent and failed per hour (`sidecar.activity.hourly`), a
  stacked bar per hour, days separated, a tooltip (<title>) per hour.
- `progress_chart(points, total)`: a job's cumulative sent and failed
  (`sidecar.activity.job_progress`), stacked areas up to the job's total.

Each is an <svg> with a viewBox and width="100%": it scales to the width of what holds
it, a phone's included. role="img" and an aria-label give the totals in words to a
screen reader. Times are naive UTC and labelled so.
"""

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape

SENT_COLOUR = "#2563eb"  # blue
FAILED_COLOUR = "#dc2626"  # red
INK = "#1f2937"
GRID = "#e5e7eb"
FONT = "system-ui,-apple-system,'Segoe UI',Arial,sans-serif"  # fonts of the device only

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# the drawing's own units (the viewBox); the browser scales them to the width it has. 640
# wide with 16-unit text: about 15 px text in a 40em page, 9 px on a 390 px phone
WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 40, 48
TEXT, SMALL = 16, 14
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def hourly_chart(hours: Sequence[tuple[datetime, int, int]]) -> str:
    """A bar per hour, `sent` below `failed`; `hours` are (start, sent, failed), oldest
    first, one per hour (as `activity.hourly` gives them). No mail at all: the frame
    and a sentence saying so."""
    period = _period(len(hours))
    sent = sum(h[1] for h in hours)
    failed = sum(h[2] for h in hours)
    if not hours or sent + failed == 0:
        label = f"Mail sent and failed per hour: no mail in the last {period}."
        return _svg(label, [_frame(), _centred(f"No mail in the last {period}")])
    first, last = hours[0][0], hours[-1][0] + timedelta(hours=1)
    label = (
        f"Mail per hour over the last {period} ({_when(first)} to {_when(last)} UTC): "
        f"{sent:,} sent, {failed:,} failed."
    )
    top, ticks = _scale(max(h[1] + h[2] for h in hours))
    slot = PLOT_W / len(hours)
    bar = max(slot * 0.8, 0.5)
    parts = [_frame(), *_y_axis(top, ticks), *_days(hours, slot), _legend(sent, failed)]
    for i, (start, s, f) in enumerate(hours):
        x = LEFT + i * slot + (slot - bar) / 2
        tip = f"{_when(start)}–{(start + timedelta(hours=1)):%H:%M} UTC: {s:,} sent, {f:,} failed"
        group = [f"<title>{escape(tip)}</title>",
                 _rect("hit", LEFT + i * slot, TOP, slot, PLOT_H, "transparent")]  # fmt: skip
        s_h, f_h = s / top * PLOT_H, f / top * PLOT_H
        if s:
            group.append(_rect("sent", x, TOP + PLOT_H - s_h, bar, s_h, SENT_COLOUR, s))
        if f:
            group.append(_rect("failed", x, TOP + PLOT_H - s_h - f_h, bar, f_h, FAILED_COLOUR, f))
        parts.append(f'<g class="hour">{"".join(group)}</g>')
    parts.append(_text(LEFT + PLOT_W, HEIGHT - 6, "hours in UTC", "end", size=SMALL))
    return _svg(label, parts)


def progress_chart(points: Sequence[tuple[datetime, int, int]], total: int) -> str:
    """Stacked areas of a job's cumulative sent (below) and failed (above) over time, up
    to `total` (the job's recipients, a dashed line); `points` are (at, sent, failed),
    oldest first (as `activity.job_progress` gives them)."""
    sent = points[-1][1] if points else 0
    failed = points[-1][2] if points else 0
    if len(points) < 2 or sent + failed == 0:
        label = f"Progress: nothing sent or failed yet, of {total:,}."
        return _svg(label, [_frame(), _centred("Nothing sent or failed yet")])
    first, last = points[0][0], points[-1][0]
    label = (
        f"Progress from {_when(first)} to {_when(last)} UTC: {sent:,} sent and "
        f"{failed:,} failed of {total:,}."
    )
    top, ticks = _scale(max(total, max(p[1] + p[2] for p in points)))
    span = max((last - first).total_seconds(), 1)

    def xy(at: datetime, value: float) -> str:
        x = LEFT + (at - first).total_seconds() / span * PLOT_W
        return f"{_n(x)},{_n(TOP + PLOT_H - value / top * PLOT_H)}"

    base = [xy(p[0], 0) for p in points]
    sent_line = [xy(p[0], p[1]) for p in points]
    done_line = [xy(p[0], p[1] + p[2]) for p in points]
    parts = [_frame(), *_y_axis(top, ticks), _legend(sent, failed)]
    y_total = TOP + PLOT_H - total / top * PLOT_H
    parts.append(
        f'<line class="total" x1="{LEFT}" y1="{_n(y_total)}" x2="{LEFT + PLOT_W}" '
        f'y2="{_n(y_total)}" stroke="{INK}" stroke-dasharray="4 3"/>'
    )
    parts.append(_text(LEFT + PLOT_W - 4, y_total - 5, f"total {total:,}", "end", size=SMALL))
    parts.append(_area("sent", sent_line + base[::-1], SENT_COLOUR, f"{sent:,} sent"))
    parts.append(_area("failed", done_line + sent_line[::-1], FAILED_COLOUR, f"{failed:,} failed"))
    parts.append(f'<polyline points="{" ".join(done_line)}" fill="none" stroke="{INK}"/>')
    for at, s, f in points:  # a tooltip per point: an unpainted target on the top edge
        cx, cy = xy(at, s + f).split(",")
        tip = escape(f"{_when(at)}:{at:%S} UTC: {s:,} sent, {f:,} failed")
        parts.append(f'<circle class="point" cx="{cx}" cy="{cy}" r="5" fill="transparent">'
                     f"<title>{tip}</title></circle>")  # fmt: skip
    parts.append(_text(LEFT, TOP + PLOT_H + 22, f"{_when(first)} UTC", "start"))
    parts.append(_text(LEFT + PLOT_W, TOP + PLOT_H + 22, f"{_when(last)} UTC", "end"))
    return _svg(label, parts)


# --- pieces ----------------------------------------------------------------------------------


def _svg(label: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'role="img" aria-label="{escape(label)}" font-family="{escape(FONT)}" font-size="{TEXT}" '
        f'fill="{INK}" style="max-width:100%;height:auto;display:block">'
        + "".join(parts)
        + "</svg>"
    )


def _frame() -> str:
    """The plot's axes: a baseline and a left edge."""
    bottom = TOP + PLOT_H
    return (
        f'<path class="axis" d="M{LEFT} {TOP}V{bottom}H{LEFT + PLOT_W}" fill="none" '
        f'stroke="{INK}" stroke-width="1"/>'
    )


def _scale(peak: int) -> tuple[int, int]:
    """(top, step): the y axis goes 0..top in whole steps of 1, 2 or 5 × 10^k, at most
    five of them, top ≥ peak. Counts are whole: the step is never below 1."""
    rough = max(peak, 1) / 4
    power = 10 ** math.floor(math.log10(rough)) if rough >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    return step * math.ceil(max(peak, 1) / step), step


def _y_axis(top: int, step: int) -> list[str]:
    out = []
    for value in range(0, top + 1, step):
        y = TOP + PLOT_H - value / top * PLOT_H
        if value:
            out.append(f'<line x1="{LEFT}" y1="{_n(y)}" x2="{LEFT + PLOT_W}" y2="{_n(y)}" '
                       f'stroke="{GRID}"/>')  # fmt: skip
        out.append(_text(LEFT - 6, y + 5, f"{value:,}", "end", cls="tick", size=SMALL))
    return out


def _days(hours: Sequence[tuple[datetime, int, int]], slot: float) -> list[str]:
    """A line at each midnight and each day's name under its hours (when it has 12 or more:
    the name of a shorter one would run into the next)."""
    out = []
    runs: list[list[int]] = []  # [first index, count] of each day
    for i, (start, _, _) in enumerate(hours):
        if i and start.hour == 0:
            x = _n(LEFT + i * slot)
            out.append(f'<line class="day" x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + PLOT_H + 6}" '
                       f'stroke="{INK}" stroke-opacity="0.35"/>')  # fmt: skip
        if not runs or start.hour == 0:
            runs.append([i, 0])
        runs[-1][1] += 1
    for first, count in runs:
        if count >= 12:
            day = hours[first][0]
            x = LEFT + (first + count / 2) * slot
            name = f"{DAYS[day.weekday()]} {day.day}"
            out.append(_text(x, TOP + PLOT_H + 22, name, "middle", cls="day-label"))
    return out


def _legend(sent: int, failed: int) -> str:
    first = f"Sent {sent:,}"
    x2 = LEFT + 20 + len(first) * TEXT * 0.6 + 24  # after the first (a wide glyph: 0.6 em)
    y = 20
    return (
        f'<g class="legend"><rect x="{LEFT}" y="{y - 13}" width="14" height="14" '
        f'fill="{SENT_COLOUR}"/>{_text(LEFT + 20, y, first, "start")}'
        f'<rect x="{_n(x2)}" y="{y - 13}" width="14" height="14" fill="{FAILED_COLOUR}"/>'
        f"{_text(x2 + 20, y, f'Failed {failed:,}', 'start')}</g>"
    )


def _centred(message: str) -> str:
    return _text(LEFT + PLOT_W / 2, TOP + PLOT_H / 2, message, "middle", cls="empty", size=18)


def _rect(cls: str, x: float, y: float, w: float, h: float, fill: str, value=None) -> str:
    data = "" if value is None else f' data-value="{int(value)}"'
    return (
        f'<rect class="{cls}" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" '
        f'fill="{fill}"{data}/>'
    )


def _area(cls: str, coords: list[str], fill: str, tip: str) -> str:
    return (
        f'<polygon class="{cls}" points="{" ".join(coords)}" fill="{fill}" fill-opacity="0.85">'
        f"<title>{escape(tip)}</title></polygon>"
    )


def _text(x: float, y: float, text: str, anchor: str, cls: str = "", size: int = TEXT) -> str:
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<text{klass} x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}">'
        f"{escape(text)}</text>"
    )


def _when(at: datetime) -> str:
    """'Tue 18 Nov 10:00': English names whatever the server's locale."""
    return f"{DAYS[at.weekday()]} {at.day} {MONTHS[at.month - 1]} {at:%H:%M}"


def _period(hours: int) -> str:
    if hours and hours % 24 == 0:
        days = hours // 24
        return "day" if days == 1 else f"{days} days"
    return "hour" if hours == 1 else f"{hours} hours"


def _n(value: float) -> str:
    """A coordinate with at most two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
