"""Learners + completion of one 50,000-learner course, pulled from the Moodle sandbox.

Targets (issue 3): at most 60 Moodle requests with the companion bulk function, at most
1,100 with tool_mobile_call_external_functions batching; the per-user figure is printed
for comparison. The requests are counted by the sandbox (what Moodle served), wall time
and the client's peak RSS are measured in a child process per method, so the sandbox's
own memory is not counted.

    python bench/moodle.py [--learners 50000] [--activities] [--skip-per-user]
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def client_run(url: str, token: str, courseid: int, method: str, activities: bool) -> None:
    """Child: pull learners and completion, print figures as JSON."""
    from moodle_ws import functions
    from moodle_ws.client import ClientSettings, MoodleClient
    from moodle_ws.completion import learners_with_completion

    client = MoodleClient(ClientSettings(url=url, token=token, max_concurrency=4))
    started = time.perf_counter()
    site = functions.site_info(client)
    users, result, requests = learners_with_completion(
        client, courseid, site=site, activities=activities, method=method
    )
    wall = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "users": len(users), "completed": len(result.completed), "client_requests": requests + 1,
        "method": result.method, "wall": wall, "rss_mb": rss,
        "states": sum(len(v) for v in result.activity_states.values()),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--learners", type=int, default=50_000)
    ap.add_argument("--activities", action="store_true", help="also every activity's state")
    ap.add_argument("--skip-per-user", action="store_true")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        url, token, courseid, method, acts = args.child
        client_run(url, token, int(courseid), method, acts == "1")
        return

    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

    t0 = time.perf_counter()
    site = generate_site(SiteSpec(seed=1, learners=args.learners, courses=1))
    print(f"sandbox: {args.learners} learners generated in {time.perf_counter() - t0:.1f} s")
    targets = {"companion": 60, "batch": 1100, "per_user": None}
    methods = ["companion", "batch"] + ([] if args.skip_per_user else ["per_user"])
    with SandboxServer(site) as server:
        for method in methods:
            site.reset_counts()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", server.url, site.token,
                 str(site.main_course_id), method, "1" if args.activities else "0"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            served = site.request_count
            target = targets[method]
            verdict = (
                ""
                if target is None
                else (f"  target <= {target}: {'met' if served <= target else 'MISSED'}")
            )
            print(
                f"{method:>9}: {served:>6} Moodle requests (client counted "
                f"{r['client_requests']}), {r['users']} learners, {r['completed']} completed, "
                f"{r['states']} activity states, {r['wall']:.1f} s, client peak RSS "
                f"{r['rss_mb']:.0f} MB{verdict}"
            )


if __name__ == "__main__":
    main()
