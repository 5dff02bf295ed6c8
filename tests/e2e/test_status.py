"""`moodle-offload status` as a real process: what the overview shows, on a terminal."""

from aiosmtpd.controller import Controller

from tests.e2e.conftest import cli, free_port, message_args, write_config, write_csv


class Refusing:
    """An SMTP server that does not know learner2."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("learner2@"):
            return f"550 5.1.1 <{address}>: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def test_status_shows_running_jobs_failures_parts_and_sync_and_fails_with_a_part(tmp_path):
    controller = Controller(Refusing(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        config = write_config(tmp_path, smtp_port=controller.port)
        cli(config, "send", "csv", str(write_csv(tmp_path / "a.csv", 3)),
            *message_args(tmp_path), "--yes", "--deliver")  # fmt: skip
        waiting = cli(config, "send", "csv", str(write_csv(tmp_path / "b.csv", 40, start=10)),
                      *message_args(tmp_path), "--yes").stdout  # fmt: skip
        short = waiting.split("job ", 1)[1][:8]

        out = cli(config, "status").stdout
        assert out.startswith("moodle-offload: ok (")
        assert "Running jobs: 1\n" in out
        running = next(line for line in out.splitlines() if line.startswith(f"  {short}"))
        assert "send_csv" in running and "0 sent, 0 failed, 40 pending of 40 (0% done)" in running
        assert "Failures in the last 24 h: 1 recipient in 1 job\n" in out
        assert "1  550 5.1.1 <address>: User unknown" in out  # the address never shown
        assert "learner2@" not in out
        assert "  ok    smtp " in out and "  ok    database " in out
        assert "  off   moodle " in out
        assert "Schedules: no schedule sync yet" in out
    finally:
        controller.stop()

    down = cli(config, "status", check=False)
    assert down.returncode == 1
    assert down.stdout.startswith("moodle-offload: fail (")
    assert "  FAIL  smtp " in down.stdout
