"""SIGHUP applies a changed templates.dir to everything that renders, without a restart."""

from sidecar.config import load
from sidecar.daemon import Daemon

TEMPLATE = (
    "{% block subject %}{{ word }} for {{ learner.firstname }}{% endblock %}"
    "{% block html %}<p>{{ word }}</p>{% endblock %}{% block text %}{{ word }}{% endblock %}"
)
LEARNER = {"learner": {"firstname": "Aoife"}}


def config_with(tmp_path, template_dir) -> str:
    return (
        f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n\n'
        f'[templates]\ndir = "{template_dir}"\n'
    )


def test_sighup_switches_to_a_new_templates_dir(tmp_path):
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "reminder.html").write_text(TEMPLATE.replace("{{ word }}", name))
    path = tmp_path / "offload.toml"
    path.write_text(config_with(tmp_path, tmp_path / "old"))
    daemon = Daemon(load(path), path)
    composer = daemon.runtime.composer  # built before the reload, as the running threads are
    assert daemon.runtime.renderer.render_email("reminder", LEARNER).subject == "old for Aoife"

    path.write_text(config_with(tmp_path, tmp_path / "new"))
    daemon.handle_hup()
    assert composer.renderer.render_email("reminder", LEARNER).subject == "new for Aoife"
    assert daemon.runtime.renderer.render_email("reminder", LEARNER).html == "<p>new</p>"

    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n')
    daemon.handle_hup()  # no templates.dir: the shipped reminder
    subject = daemon.runtime.renderer.render_email(
        "reminder", {**LEARNER, "course": {"fullname": "Safety", "url": "https://m/c"}}
    ).subject
    assert subject == "Reminder: Safety"
