"""The bounce suppression list keys an address as the job ledger does: an IDN domain in its
ASCII (xn--) form, whichever form it is written, looked up or taken off in; on every backend."""

from datetime import datetime

from sidecar import suppression
from sidecar.db import store
from sidecar.db.models import SuppressedAddress

NOW = datetime(2025, 11, 18, 12, 0, 0)


def bounce(address: str) -> bool:
    with store.atomic():
        return suppression.suppress(address, "bounced (General)", "ses_bounce", NOW)


def test_an_idn_address_is_one_entry_in_either_form_and_matches_the_ledgers_form(db):
    assert bounce("Joe@Müller.de")
    assert not bounce("joe@xn--mller-kva.de")  # the form SES reports: already on the list
    assert [a.email for a in suppression.listing()] == ["joe@xn--mller-kva.de"]
    # csvinput.validate_email, which every job uses, stores joe@xn--mller-kva.de
    looked_up = ["joe@xn--mller-kva.de", "JOE@müller.de", "joe@example.org"]
    assert suppression.suppressed_among(looked_up) == {
        "joe@xn--mller-kva.de": "bounced (General)",
        "JOE@müller.de": "bounced (General)",
    }


def test_an_idn_address_is_taken_off_the_list_in_its_unicode_form(db):
    bounce("joe@xn--mller-kva.de")
    assert suppression.unsuppress(" joe@müller.de ", NOW)
    assert SuppressedAddress.select().count() == 0
    assert not suppression.unsuppress("joe@xn--mller-kva.de", NOW)


def test_what_is_no_valid_address_is_still_kept_trimmed_and_lowercased(db):
    assert bounce(" Odd..Address@Example.org ")
    assert suppression.suppressed_among(["odd..address@example.org"]) == {
        "odd..address@example.org": "bounced (General)"
    }
    assert suppression.unsuppress("ODD..ADDRESS@example.org", NOW)


def test_a_row_kept_in_unicode_form_goes_as_the_list_shows_it(db):
    # SES reports the xn-- form it was given, so no such row is written; one added by hand
    # is still taken off with the address `suppression list` prints
    SuppressedAddress.create(
        email="joe@müller.de", reason="by hand", source="admin", created_at=NOW
    )
    assert suppression.unsuppress("joe@müller.de", NOW)
    assert SuppressedAddress.select().count() == 0
