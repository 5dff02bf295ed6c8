from dataclasses import FrozenInstanceError

import pytest

from schedules import REASONS, Account, Completions, Learner, is_inactive, label, select_recipients
from tests.schedules.factory import schedule

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86400
CMID = 41


def learner(userid: int, email: str | None = "", **over) -> Learner:
    values = {
        "email": f"u{userid}@example.org" if email == "" else email,
        "firstname": f"First{userid}",
        "lastname": f"Last{userid}",
        "lastaccess": NOW - DAY,
        "lastcourseaccess": NOW - DAY,
        **over,
    }
    return Learner(userid, **values)


def ids(learners) -> list[int]:
    return [lr.userid for lr in learners]


class CourseCompletionsLike:
    """The shape of moodle_ws's CourseCompletions, without importing it (a leaf test)."""

    def __init__(self, completed, states=None, untracked=()):
        self.completed = completed
        self._states = states or {}
        self.untracked = frozenset(untracked)

    def activity_state(self, cmid, userid):
        return self._states.get(cmid, {}).get(userid, 0)


class WithoutUntracked:
    """A completion object that has no `untracked` attribute at all."""

    completed = {2: NOW - DAY}

    def activity_state(self, cmid, userid):
        return 0


# 1 and 3 have not completed; 2 and 4 have.
CLASS = [learner(1), learner(2), learner(3), learner(4)]
DONE = Completions(completed={2: NOW - DAY, 4: NOW - 2 * DAY})


@pytest.mark.parametrize(
    "audience, expected, left_out",
    [
        ("enrolled", [1, 2, 3, 4], {}),
        ("not_completed", [1, 3], {"completed": 2}),
        ("completed", [2, 4], {"not_completed": 2}),
    ],
)
def test_each_audience(audience, expected, left_out):
    sel = select_recipients(schedule(audience=audience), CLASS, DONE, NOW)
    assert ids(sel.email) == expected
    assert sel.audience_size == len(expected)
    assert sel.left_out == left_out
    assert sel.certificate == ()


def test_inactive_audience_picks_the_learners_idle_for_longer_than_inactive_days():
    learners = [
        learner(1, lastcourseaccess=NOW - 31 * DAY),  # idle in the course
        learner(2, lastcourseaccess=NOW - 5 * DAY),  # active
        learner(3, lastcourseaccess=0, lastaccess=NOW),  # never opened the course
        learner(4, lastcourseaccess=None, lastaccess=NOW - 40 * DAY),  # site access fallback
    ]
    sel = select_recipients(schedule(audience="inactive", inactive_days=30), learners, DONE, NOW)
    assert ids(sel.email) == [1, 3, 4]
    assert sel.audience_size == 3
    assert sel.left_out == {"active": 1}


@pytest.mark.parametrize(
    "lastcourseaccess, lastaccess, inactive",
    [
        (NOW - 2 * DAY, NOW - 400 * DAY, False),
        (NOW - 40 * DAY, NOW, True),
        (None, NOW - 40 * DAY, True),
        (None, NOW - 2 * DAY, False),
        (0, NOW, True),
        (None, 0, True),
        (NOW - 30 * DAY, NOW, False),
        (NOW - 30 * DAY - 1, NOW, True),
        (None, NOW - 30 * DAY, False),
        (None, NOW - 30 * DAY - 1, True),
    ],
    ids=[
        "course_access_recent_wins_over_old_site_access",
        "course_access_old_wins_over_recent_site_access",
        "no_course_access_falls_back_to_old_site_access",
        "no_course_access_falls_back_to_recent_site_access",
        "course_access_never",
        "site_access_never",
        "course_access_exactly_30_days_is_not_yet_inactive",
        "course_access_a_second_older_is_inactive",
        "site_access_exactly_30_days_is_not_yet_inactive",
        "site_access_a_second_older_is_inactive",
    ],
)
def test_is_inactive(lastcourseaccess, lastaccess, inactive):
    lr = learner(1, lastcourseaccess=lastcourseaccess, lastaccess=lastaccess)
    assert is_inactive(lr, 30, NOW) is inactive


def test_course_completion_suppression_counts_by_reason():
    s = schedule(suppress_course_completion=1)
    sel = select_recipients(s, CLASS, DONE, NOW)
    assert ids(sel.email) == [1, 3]
    assert sel.left_out == {"course_completed": 2}
    assert sel.audience_size == 4
    assert sel.total == 2 and sel.left_out_total == 2


@pytest.mark.parametrize(
    "state, suppressed",
    [(0, False), (1, True), (2, True), (3, True)],
    ids=["incomplete", "complete", "complete_pass", "complete_fail_still_complete"],
)
def test_activity_suppression_for_each_completion_state(state, suppressed):
    s = schedule(suppresstarget=CMID)
    completion = Completions(activity_states={CMID: {1: state}})
    sel = select_recipients(s, [learner(1), learner(2)], completion, NOW)
    assert ids(sel.email) == ([2] if suppressed else [1, 2])
    assert sel.left_out == ({"activity_completed": 1} if suppressed else {})


def test_activity_states_of_other_activities_do_not_suppress():
    completion = Completions(activity_states={CMID + 1: {1: 1}})
    sel = select_recipients(schedule(suppresstarget=CMID), [learner(1)], completion, NOW)
    assert ids(sel.email) == [1]


def test_no_target_means_activity_states_are_ignored():
    completion = Completions(activity_states={CMID: {1: 1}, 0: {1: 1}})
    sel = select_recipients(schedule(suppresstarget=0), [learner(1)], completion, NOW)
    assert ids(sel.email) == [1]


def test_learner_who_completed_between_two_firings_is_suppressed_in_the_second():
    s = schedule(audience="not_completed", suppress_course_completion=1, suppresstarget=CMID)
    learners = [learner(1), learner(2), learner(3)]
    first = select_recipients(s, learners, Completions(), NOW)
    assert ids(first.email) == [1, 2, 3]
    later = Completions(completed={1: NOW + 10}, activity_states={CMID: {2: 3}})
    second = select_recipients(s, learners, later, NOW + DAY)
    assert ids(second.email) == [3]
    # 1 left the not_completed audience; 2 failed the activity, which is still complete.
    assert second.left_out == {"completed": 1, "activity_completed": 1}
    assert second.audience_size == 2


def test_reminder_to_everyone_suppresses_a_learner_who_completed_since_last_run():
    s = schedule(audience="enrolled", suppress_course_completion=1)
    learners = [learner(1), learner(2)]
    assert ids(select_recipients(s, learners, Completions(), NOW).email) == [1, 2]
    later = select_recipients(s, learners, Completions(completed={2: NOW + 5}), NOW + DAY)
    assert ids(later.email) == [1]
    assert later.left_out == {"course_completed": 1}


@pytest.mark.parametrize("email", [None, "", "   "], ids=["none", "empty", "blank"])
def test_learner_without_an_email_address_is_counted_not_sent(email):
    lr = Learner(1, email, "First1", "Last1")
    sel = select_recipients(schedule(action_type="both"), [lr, learner(2)], DONE, NOW)
    assert ids(sel.email) == [2]
    assert ids(sel.certificate) == [2]
    assert sel.left_out == {"no_email": 1}


def test_suppression_reason_is_the_first_that_applies_and_counted_once():
    s = schedule(suppress_course_completion=1, suppresstarget=CMID)
    completion = Completions(completed={2: NOW}, activity_states={CMID: {2: 1, 3: 2}})
    learners = [learner(1), learner(2, email=None), learner(3, email=None), learner(4, email=None)]
    sel = select_recipients(s, learners, completion, NOW)
    assert ids(sel.email) == [1]
    assert sel.left_out == {"activity_completed": 1, "course_completed": 1, "no_email": 1}
    assert sel.audience_size == 4 == len(sel.email) + sel.left_out_total


@pytest.mark.parametrize("audience", ["not_completed", "completed"])
def test_untracked_learner_is_not_tracked_for_completion_audiences(audience):
    # 5 is untracked; a contradictory "completed" entry for them must not be trusted.
    completion = CourseCompletionsLike({2: NOW, 5: NOW}, untracked={5, 6})
    learners = [learner(1), learner(2), learner(5), learner(6)]
    sel = select_recipients(schedule(audience=audience), learners, completion, NOW)
    expected = {
        "not_completed": ([1], {"not_tracked": 2, "completed": 1}),
        "completed": ([2], {"not_tracked": 2, "not_completed": 1}),
    }
    assert (ids(sel.email), dict(sel.left_out)) == expected[audience]


def test_untracked_learner_is_mailed_when_the_audience_does_not_need_completion():
    completion = CourseCompletionsLike({}, untracked={5})
    sel = select_recipients(schedule(audience="enrolled"), [learner(5)], completion, NOW)
    assert ids(sel.email) == [5]


def test_completion_objects_without_untracked_are_accepted():
    sel = select_recipients(schedule(audience="completed"), CLASS, WithoutUntracked(), NOW)
    assert ids(sel.email) == [2]


def test_certificate_only_to_completers_and_once_per_course():
    s = schedule(action_type="certificate")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={2})
    assert sel.email == ()
    assert ids(sel.certificate) == [4]
    assert sel.left_out == {"already_issued": 1, "not_completed": 2}
    assert sel.audience_size == 4 and sel.total == 1


def test_certificate_reissue_includes_those_already_issued():
    s = schedule(action_type="certificate")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={2, 4}, reissue=True)
    assert ids(sel.certificate) == [2, 4]
    assert sel.left_out == {"not_completed": 2}


def test_both_mails_the_selected_and_certifies_the_completers_not_yet_issued():
    s = schedule(action_type="both")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={4})
    assert ids(sel.email) == [1, 2, 3, 4]
    assert ids(sel.certificate) == [2]
    assert sel.left_out == {}  # 4 still gets the email
    assert sel.withheld == {"already_issued": 1}
    assert sel.total == 4


def test_both_with_reissue():
    s = schedule(action_type="both")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={4}, reissue=True)
    assert ids(sel.certificate) == [2, 4] and sel.left_out == {}


def test_email_action_ignores_issued_certificates():
    sel = select_recipients(schedule(action_type="email"), CLASS, DONE, NOW, issued={2, 4})
    assert ids(sel.email) == [1, 2, 3, 4] and sel.certificate == ()


def test_order_is_by_userid_and_duplicates_count_once():
    learners = [learner(9), learner(3), learner(7), learner(3, email="other@example.org")]
    sel = select_recipients(schedule(), learners, Completions(), NOW)
    assert ids(sel.email) == [3, 7, 9]
    assert sel.email[0].email == "u3@example.org"
    assert sel.audience_size == 3


def test_selection_is_immutable():
    sel = select_recipients(schedule(suppress_course_completion=1), CLASS, DONE, NOW)
    with pytest.raises(FrozenInstanceError):
        sel.email = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        sel.left_out["course_completed"] = 0  # type: ignore[index]


def test_same_inputs_same_selection():
    s = schedule(action_type="both", suppresstarget=CMID)
    completion = Completions(completed={2: NOW}, activity_states={CMID: {3: 2}})
    assert select_recipients(s, CLASS, completion, NOW) == select_recipients(
        s, list(reversed(CLASS)), completion, NOW
    )


# --- every learner accounted for ------------------------------------------------------------


def check_email(address: str) -> str:
    """A stand-in for the sidecar's validator: one @ with something either side."""
    local, at, domain = address.partition("@")
    if not (local and at and domain) or "@" in domain:
        raise ValueError(f"{address!r} is not an address")
    return address


def test_a_not_completed_audience_counts_the_completers_it_leaves_out():
    # The issue: "suppressed: none" while every completer was left out by the audience.
    s = schedule(audience="not_completed", suppress_course_completion=1)
    sel = select_recipients(s, CLASS, DONE, NOW)
    assert ids(sel.email) == [1, 3]
    assert sel.left_out == {"completed": 2}
    assert sel.learners == 4 == sel.total + sel.left_out_total


@pytest.mark.parametrize("address", ["not-an-address", "a@b@c", "@example.org", "user@"], ids=repr)
def test_an_invalid_address_is_left_out_when_a_checker_is_given(address):
    learners = [learner(1, email=address), learner(2)]
    sel = select_recipients(schedule(), learners, DONE, NOW, check_email=check_email)
    assert ids(sel.email) == [2]
    assert sel.left_out == {"invalid_email": 1}


def test_the_checker_sees_the_address_without_surrounding_blanks():
    seen = []
    select_recipients(schedule(), [learner(1, email=" u1@example.org ")], DONE, NOW,
                      check_email=seen.append)  # fmt: skip
    assert seen == ["u1@example.org"]


def test_a_suspended_enrolment_is_left_out_before_anything_is_asked_of_it():
    learners = [learner(1), Learner(2, None, "", "", active_enrolment=False)]
    s = schedule(audience="not_completed", suppress_course_completion=1)
    sel = select_recipients(s, learners, Completions(), NOW)
    assert ids(sel.email) == [1]
    assert sel.left_out == {"enrolment_suspended": 1}


def test_a_company_schedule_counts_the_other_companies_learners():
    sel = select_recipients(schedule(), CLASS, DONE, NOW, members={1, 2})
    assert ids(sel.email) == [1, 2]
    assert sel.left_out == {"other_company": 2}


@pytest.mark.parametrize(
    "account, reason",
    [
        (Account(suspended=True), "account_suspended"),
        (Account(auth="nologin"), "nologin"),
        (Account(suspended=True, auth="nologin"), "account_suspended"),
        (Account(suspended=False, auth="ldap"), None),
        (Account(suspended=None, auth=None), None),  # fields the token may not see
    ],
    ids=["suspended", "nologin", "both", "active_ldap", "not_visible"],
)
def test_moodle_mails_no_suspended_or_nologin_account_and_neither_do_we(account, reason):
    s = schedule(action_type="both")
    sel = select_recipients(s, CLASS, DONE, NOW, accounts={2: account})
    expected = [1, 3, 4] if reason else [1, 2, 3, 4]
    assert ids(sel.email) == expected
    assert ids(sel.certificate) == [x for x in (2, 4) if x in expected]
    assert sel.left_out == ({reason: 1} if reason else {})


def test_a_learner_moodle_gave_no_account_for_is_mailed():
    sel = select_recipients(schedule(), CLASS, DONE, NOW, accounts={})
    assert ids(sel.email) == [1, 2, 3, 4]


def test_the_ledgers_lists_leave_out_by_their_own_reason_in_their_order():
    excluded = {"suppressed": {1, 3}, "unsubscribed": {3, 4}}
    sel = select_recipients(schedule(), CLASS, DONE, NOW, excluded=excluded)
    assert ids(sel.email) == [2]
    assert sel.left_out == {"suppressed": 2, "unsubscribed": 1}
    assert list(sel.left_out) == ["suppressed", "unsubscribed"]


def test_already_issued_under_both_is_a_withheld_certificate_not_a_learner_left_out():
    sel = select_recipients(schedule(action_type="both"), CLASS, DONE, NOW, issued={2})
    assert sel.total == 4 and sel.left_out == {} and sel.withheld == {"already_issued": 1}


def test_a_withheld_certificate_is_not_counted_for_a_learner_left_out_by_the_account():
    s = schedule(action_type="both")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={2}, accounts={2: Account(True)})
    assert sel.left_out == {"account_suspended": 1} and sel.withheld == {}


def test_the_account_is_the_last_reason_so_only_the_first_selections_recipients_are_asked():
    # A caller selects once without accounts, asks Moodle about those recipients only, and
    # selects again: a learner left out for an earlier reason never needed their account.
    s = schedule(action_type="certificate", audience="completed")
    first = select_recipients(s, CLASS, DONE, NOW, issued={2})
    assert ids(first.recipients) == [4]
    everyone = {uid: Account(suspended=True) for uid in (1, 2, 3, 4)}
    asked = {uid: everyone[uid] for uid in ids(first.recipients)}
    assert select_recipients(s, CLASS, DONE, NOW, issued={2}, accounts=asked) == (
        select_recipients(s, CLASS, DONE, NOW, issued={2}, accounts=everyone)
    )


# One learner for each reason, in a course where the reasons do not overlap, plus two who
# receive everything: 20 suspended enrolment, 21 other company, 22 untracked, 23 completed
# and inactive, 24 activity complete, 25 no address, 26 invalid, 27 suppressed, 28 suspended
# account, 29 nologin, 30 completed and issued, 31 idle.
MIXED = [
    Learner(20, "u20@example.org", "A", "B", active_enrolment=False),
    learner(21), learner(22), learner(23, lastcourseaccess=NOW - 90 * DAY),
    learner(24), learner(25, email=None), learner(26, email="a@b@c"), learner(27),
    learner(28), learner(29), learner(30), learner(31, lastcourseaccess=NOW - 90 * DAY),
    learner(32), learner(33),
]  # fmt: skip
MIXED_COMPLETION = CourseCompletionsLike(
    {23: NOW - DAY, 30: NOW - DAY, 33: NOW - DAY}, {CMID: {24: 1}}, untracked={22}
)
MIXED_ACCOUNTS = {28: Account(suspended=True), 29: Account(auth="nologin")}


@pytest.mark.parametrize("action", ["email", "certificate", "both"])
@pytest.mark.parametrize("audience", ["enrolled", "inactive", "not_completed", "completed"])
@pytest.mark.parametrize("suppress_course", [0, 1])
def test_every_learner_is_a_recipient_or_left_out_for_exactly_one_reason(
    action, audience, suppress_course
):
    s = schedule(
        action_type=action, audience=audience, inactive_days=30, suppresstarget=CMID,
        suppress_course_completion=suppress_course,
    )  # fmt: skip
    sel = select_recipients(
        s, [*MIXED, *MIXED[:3]], MIXED_COMPLETION, NOW, issued={30}, members={20, *range(22, 40)},
        check_email=check_email, excluded={"suppressed": {27}}, accounts=MIXED_ACCOUNTS,
    )  # fmt: skip
    assert sel.learners == len(MIXED)
    assert sel.total + sel.left_out_total == sel.learners
    assert all(n > 0 for n in sel.left_out.values())
    assert set(sel.left_out) <= set(REASONS)
    assert not set(ids(sel.recipients)) & {20, 21, 24, 25, 26, 27, 28, 29}  # never mailed
    assert sel.left_out["other_company"] == sel.left_out["enrolment_suspended"] == 1


@pytest.mark.parametrize(
    "audience, action, recipients, left_out",
    [
        ("enrolled", "email", [22, 31, 32], {
            "other_company": 1, "enrolment_suspended": 1, "course_completed": 3,
            "activity_completed": 1, "no_email": 1, "invalid_email": 1, "suppressed": 1,
            "account_suspended": 1, "nologin": 1}),
        ("not_completed", "email", [31, 32], {
            "other_company": 1, "enrolment_suspended": 1, "not_tracked": 1, "completed": 3,
            "activity_completed": 1, "no_email": 1, "invalid_email": 1, "suppressed": 1,
            "account_suspended": 1, "nologin": 1}),
        ("inactive", "email", [31], {
            "other_company": 1, "enrolment_suspended": 1, "active": 10, "course_completed": 1}),
        ("completed", "certificate", [], {
            "other_company": 1, "enrolment_suspended": 1, "not_tracked": 1,
            "not_completed": 8, "course_completed": 3}),
    ],
    ids=["enrolled", "not_completed", "inactive", "completed_certificate"],
)  # fmt: skip
def test_the_counts_by_reason_for_a_mixed_course(audience, action, recipients, left_out):
    s = schedule(action_type=action, audience=audience, inactive_days=30, suppresstarget=CMID,
                 suppress_course_completion=1)  # fmt: skip
    sel = select_recipients(
        s, MIXED, MIXED_COMPLETION, NOW, issued={30}, members={20, *range(22, 40)},
        check_email=check_email, excluded={"suppressed": {27}}, accounts=MIXED_ACCOUNTS,
    )  # fmt: skip
    assert ids(sel.recipients) == recipients
    assert sel.left_out == left_out
    assert list(sel.left_out) == [r for r in REASONS if r in left_out]


def test_labels_read_as_words_and_unknown_reasons_as_themselves():
    assert label("invalid_email") == "invalid address"
    assert label("enrolment_suspended") == "suspended enrolment"
    assert label("unsubscribed") == "unsubscribed"
    assert label("some_new_list") == "some new list"


def test_an_opt_out_keeps_the_reminder_from_the_learner_but_never_their_certificate():
    # 1 and 3 have not completed, 2 and 4 have; 4 already holds the certificate.
    s = schedule(action_type="both")
    sel = select_recipients(s, CLASS, DONE, NOW, issued={4}, unsubscribed={1, 2, 4})
    assert ids(sel.email) == [2, 3]  # 2's email carries the certificate: it still goes
    assert ids(sel.certificate) == [2]
    assert sel.left_out == {"unsubscribed": 2} and sel.withheld == {}
    assert sel.total + sel.left_out_total == len(CLASS)


def test_an_opt_out_leaves_the_learner_out_of_an_email_schedule_by_its_own_reason():
    sel = select_recipients(schedule(), CLASS, DONE, NOW, unsubscribed={1, 2})
    assert ids(sel.email) == [3, 4]
    assert sel.left_out == {"unsubscribed": 2}
    assert label("unsubscribed") == "unsubscribed"
