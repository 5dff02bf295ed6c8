"""Templates: sandboxed, strict, overridable; every shipped one renders."""

import pytest

from sidecar.errors import TemplateError
from sidecar.render import Renderer, learner_vars, shipped_ids

COMMON = {
    **learner_vars(7, "ana@example.org", "Aoife", "O'Brien & Sons"),
    "course": {"fullname": "Safety & Health", "shortname": "SH", "url": "https://m.example/c/5"},
    "company": {"name": "Acme"}, "inactive_days": 30, "site": {"name": "Academy", "url": "https://m.example"},
    "username": "ana", "temporary_password": "Tmp-9x!",
    "license": {"id": 15, "name": "2025 seats", "validlength": 90, "startdate": "1 June 2025",
                "expirydate": "1 June 2026"},
    "courses": [{"id": 5, "fullname": "Safety & Health", "shortname": "SH",
                 "url": "https://m.example/c/5"}],
    "issued_date": "18 November 2025",
    "certificate_url": "https://offload.example/certificates/ABC",
    "message": {"subject": "Hello", "body": "Line <one>\nline two\n\nPara"},
}  # fmt: skip


@pytest.mark.parametrize(
    "template_id", [t for t in shipped_ids() if t not in ("certificate", "_footer")]
)
def test_every_shipped_template_renders_with_its_documented_variables(template_id):
    email = Renderer().render_email(template_id, COMMON)
    assert email.subject and "\n" not in email.subject
    assert "<" not in email.text.replace("Line <one>", "")
    assert "Aoife" in email.html or "Line &lt;one&gt;" in email.html


def test_html_is_escaped_and_subject_and_text_are_not():
    email = Renderer().render_email("reminder", COMMON)
    assert "Safety &amp; Health" in email.html and email.subject == "Reminder: Safety & Health"
    assert "Safety & Health" in email.text


def test_a_csv_message_greets_each_learner_by_the_variables_it_names():
    message = {
        "subject": "{{ learner.firstname }}, your {{ course_name }} results",
        "body": "Dear {{ learner.firstname }} <{{ learner.email }}>,\n\nsee {{ course_name }}.",
    }
    variables = {**COMMON, "message": message, "course_name": "Safety & Health"}
    email = Renderer().preview("custom", variables)
    assert email.subject == "Aoife, your Safety & Health results"
    assert email.text.startswith("Dear Aoife <ana@example.org>,\n\nsee Safety & Health.")
    assert "<p>Dear Aoife &lt;ana@example.org&gt;,</p>" in email.html
    assert "Safety &amp; Health" in email.html
    # a CSV value is a value, never a template of its own
    email = Renderer().preview("custom", {**variables, "course_name": "{{ 7 * 7 }}"})
    assert "{{ 7 * 7 }}" in email.text and "49" not in email.text


def test_a_csv_message_naming_an_unknown_variable_is_refused_at_preview():
    message = {"subject": "Hi", "body": "Dear {{ learner.nickname }}"}
    with pytest.raises(TemplateError, match=r"template 'custom'.*nickname"):
        Renderer().preview("custom", {**COMMON, "message": message})


def test_undefined_variable_is_an_error_naming_template_line_and_variable(tmp_path):
    (tmp_path / "promo.html").write_text(
        "{% block subject %}Hi{% endblock %}\n{% block html %}\n"
        "<p>{{ learner.nickname }}</p>{% endblock %}"
        "{% block text %}x{% endblock %}"
    )
    with pytest.raises(TemplateError, match=r"template 'promo' line 3: .*nickname"):
        Renderer(tmp_path).preview("promo", COMMON)


def test_templates_dir_overrides_the_shipped_one(tmp_path):
    (tmp_path / "reminder.html").write_text(
        "{% block subject %}Ours{% endblock %}{% block html %}<b>x</b>{% endblock %}"
        "{% block text %}x{% endblock %}{% block certificate_delivery %}link{% endblock %}"
    )
    email = Renderer(tmp_path).render_email("reminder", COMMON)
    assert email.subject == "Ours" and email.certificate_delivery == "link"
    assert Renderer().render_email("reminder", COMMON).certificate_delivery == "attach"


def test_an_edited_template_is_used_within_a_second(tmp_path, monkeypatch):
    import os

    from sidecar import render

    now = [1000.0]
    monkeypatch.setattr(render, "monotonic", lambda: now[0])
    path = tmp_path / "promo.html"
    body = (
        "{% block subject %}{{ word }}{% endblock %}"
        "{% block html %}{% include '_footer.html' %}{% endblock %}"
        "{% block text %}x{% endblock %}"
    )
    path.write_text(body.replace("{{ word }}", "First"))
    renderer = Renderer(tmp_path)
    assert renderer.render_email("promo", COMMON).subject == "First"

    path.write_text(body.replace("{{ word }}", "Second"))
    os.utime(path, (path.stat().st_mtime + 5, path.stat().st_mtime + 5))
    now[0] += 0.5  # the file is looked at no more than once a second
    assert renderer.render_email("promo", COMMON).subject == "First"
    now[0] += 1.0
    assert renderer.render_email("promo", COMMON).subject == "Second"


def test_sandbox_refuses_unsafe_attribute_access(tmp_path):
    (tmp_path / "evil.html").write_text(
        "{% block subject %}{{ learner.__class__.__mro__ }}{% endblock %}"
        "{% block html %}{% endblock %}{% block text %}{% endblock %}"
    )
    with pytest.raises(TemplateError):
        Renderer(tmp_path).preview("evil", COMMON)


def test_unknown_template_lists_the_shipped_ones():
    with pytest.raises(TemplateError, match="not found .*reminder"):
        Renderer().preview("nope", COMMON)


def test_a_company_template_wins_for_that_company_only(tmp_path):
    own = tmp_path / "companies" / "4"
    own.mkdir(parents=True)
    (own / "license.html").write_text(
        "{% block subject %}Acme: {{ license.name }}{% endblock %}"
        "{% block html %}<p>{{ company.name }}</p>{% endblock %}"
        "{% block text %}{{ company.name }}{% endblock %}"
    )
    renderer = Renderer(tmp_path)
    assert renderer.render_email("license", COMMON, 4).subject == "Acme: 2025 seats"
    assert renderer.for_company("license", 4) == "companies/4/license"
    shipped = renderer.render_email("license", COMMON, 5).subject
    assert shipped == renderer.render_email("license", COMMON).subject != "Acme: 2025 seats"
    assert renderer.for_company("reminder", 4) == "reminder"  # no file: the usual one
    assert Renderer().for_company("license", 4) == "license"  # no templates.dir


def test_an_error_in_a_company_template_names_its_file(tmp_path):
    own = tmp_path / "companies" / "7"
    own.mkdir(parents=True)
    (own / "license.html").write_text(
        "{% block subject %}{{ nope }}{% endblock %}{% block html %}{% endblock %}"
        "{% block text %}{% endblock %}"
    )
    with pytest.raises(TemplateError, match="companies/7/license"):
        Renderer(tmp_path).preview("license", COMMON, 7)
