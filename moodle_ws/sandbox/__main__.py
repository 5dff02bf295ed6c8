"""`python -m moodle_ws.sandbox`: serve a seeded sandbox until Ctrl-C, printing URL and token."""

import argparse
import threading

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site


def main(argv: list[str] | None = None) -> int:
    """Parse the options, generate the site, serve it until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m moodle_ws.sandbox", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--learners", type=int, default=500)
    parser.add_argument("--courses", type=int, default=3)
    parser.add_argument("--companies", type=int, default=2)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="add debuginfo to errors")
    args = parser.parse_args(argv)
    spec = SiteSpec(seed=args.seed, learners=args.learners, courses=args.courses,
                    companies=args.companies)  # fmt: skip
    site = generate_site(spec)
    site.debug = args.debug
    with SandboxServer(site, port=args.port) as server:
        print(f"url   {server.url}\ntoken {site.token}\nlogin {site.login_user} "
              f"service {site.login_service}", flush=True)  # fmt: skip
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
