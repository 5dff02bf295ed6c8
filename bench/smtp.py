"""5,000 emails to a local aiosmtpd sink: SmtpSender against bare smtplib, then throttled.

Prints emails/s for both over one connection (target: SmtpSender >= 90% of bare), and
the achieved rate of a throttled run against the configured one (target: within 5%).
Run: python bench/smtp.py [--count N] [--rate R]
"""

import argparse
import resource
import smtplib
import socket
import sys
import time
from pathlib import Path

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.email import build_message, make_message_id  # noqa: E402
from providers.local.settings import SmtpSettings  # noqa: E402
from providers.local.smtp import SmtpSender  # noqa: E402


class Sink:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(n: int, tag: str):
    html = "<p>Dear Ana,</p><p>This is a reminder about <b>Safety 101</b>.</p>" * 8
    text = "Dear Ana,\n\nThis is a reminder about Safety 101.\n" * 8
    return [
        build_message(sender="Academy <noreply@academy.example>", to=f"learner{i}@example.org",
                      subject="Reminder: Safety 101", html=html, text=text,
                      message_id=make_message_id(tag, i, "academy.example"))
        for i in range(n)
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--throttled-count", type=int, default=1000)
    args = ap.parse_args()
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", controller.port) as conn:  # warm the sink and the code
            for m in messages(200, "warm"):
                conn.send_message(m)
        msgs = messages(args.count, "bare")
        t = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", controller.port) as conn:
            for m in msgs:
                conn.send_message(m)
        bare = args.count / (time.perf_counter() - t)

        msgs = messages(args.count, "ours")
        settings = SmtpSettings(host="127.0.0.1", port=controller.port, security="none")
        t = time.perf_counter()
        with SmtpSender(settings) as sender:
            for m in msgs:
                sender.send(m)
        ours = args.count / (time.perf_counter() - t)

        msgs = messages(args.throttled_count, "slow")
        settings = SmtpSettings(host="127.0.0.1", port=controller.port, security="none",
                                rate_per_second=args.rate)  # fmt: skip
        t = time.perf_counter()
        with SmtpSender(settings) as sender:
            for m in msgs:
                sender.send(m)
        throttled = args.throttled_count / (time.perf_counter() - t)
    finally:
        controller.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"sink received:       {sink.count}")
    print(f"bare smtplib:        {bare:.0f} emails/s")
    print(f"SmtpSender:          {ours:.0f} emails/s  ratio {ours / bare:.2f} (target >= 0.90)")
    print(
        f"throttled at {args.rate:.0f}/s:  {throttled:.1f} emails/s  "
        f"off by {abs(throttled - args.rate) / args.rate * 100:.1f}% (target <= 5%)"
    )
    print(f"peak RSS:            {rss:.0f} MB")


if __name__ == "__main__":
    main()
