"""CSV input: problems by physical line number, nothing fatal but an unusable file."""

import pytest

from moodle_ws.sandbox.phpvalue import validate_email as moodle_accepts
from sidecar.csvinput import read_csv, validate_email
from sidecar.errors import Aborted


def write(tmp_path, content, encoding="utf-8"):
    path = tmp_path / "in.csv"
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def test_rows_extra_columns_and_problems_with_line_numbers(tmp_path):
    path = write(tmp_path, (
        "UserID, Email ,firstname,lastname,course_name\n"
        '1,a@example.org,Ana,Silva,"Safety\n101"\n'
        "2,bob@@example.org,Bob,Jones,x\n"
        "\n"
        "abc,c@example.org,Cy,Young,y\n"
        "1,d@example.org,Di,Prince,z\n"
        "5,e@example.org,Ed\n"
        "6,f@example.org,Fay,Wray,w\n"
    ))  # fmt: skip
    data = read_csv(path)
    assert [(r.line, r.userid) for r in data.rows] == [(2, 1), (9, 6)]
    assert data.rows[0].extra == {"course_name": "Safety\n101"}
    assert data.extra_columns == ("course_name",)
    assert [p.line for p in data.problems] == [4, 6, 7, 8]
    messages = " | ".join(p.message for p in data.problems)
    assert "bob@@example.org" in messages and "'abc' is not a positive integer" in messages
    assert "userid 1 already given on line 2" in messages
    assert "expected 5 columns, found 3" in messages


def test_a_row_repeated_exactly_is_merged_with_a_note_naming_both_lines(tmp_path):
    path = write(tmp_path, (
        "userid,email,firstname,lastname,course\n"
        "1,jane@corp.local,Jane,Doe,Safety\n"
        "2,bob@corp.local,Bob,Roe,Safety\n"
        "1,Jane@CORP.local,Jane,Doe,Safety\n"
        "2,bob@corp.local,Bob,Roe,First aid\n"
        "3,cy@corp.local,Cy,Young,Safety\n"
        "3,other@corp.local,Cy,Young,Safety\n"
    ))  # fmt: skip
    data = read_csv(path)
    assert [r.userid for r in data.rows] == [1, 2, 3]
    assert [n.message for n in data.merged] == [
        "line 4 repeats line 2 (userid 1): merged, sent once"
    ]
    assert [p.message for p in data.problems] == [
        "line 5: userid 2 already given on line 3 with another course: keep one of the two rows",
        "line 7: userid 3 already given on line 6 with another address "
        "('cy@corp.local' on line 6, 'other@corp.local' on line 7)",
    ]


def test_bom_and_semicolons(tmp_path):
    path = write(tmp_path, "\ufeffuserid;email;firstname;lastname\n1;a@example.org;Łukasz;Żółć\n")
    data = read_csv(path)
    assert data.rows[0].firstname == "Łukasz" and not data.problems


def test_missing_required_column_is_named(tmp_path):
    with pytest.raises(Aborted, match="'lastname' is missing"):
        read_csv(write(tmp_path, "userid,email,firstname\n1,a@example.org,A\n"))


def test_not_utf8_names_the_line(tmp_path):
    content = (
        "userid,email,firstname,lastname\n1,a@example.org,A,B\n2,b@example.org,Jos\xe9,C\n"
    ).encode("latin-1")
    with pytest.raises(Aborted, match="line 3 is not UTF-8"):
        read_csv(write(tmp_path, content))


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("jane@corp.local", "jane@corp.local"),
        ("learner1@example.test", "learner1@example.test"),
        ("x@intranet.internal", "x@intranet.internal"),
        ("ops@mail.localhost", "ops@mail.localhost"),
        ("a@hidden.onion", "a@hidden.onion"),
        ("a@10.in-addr.arpa", "a@10.in-addr.arpa"),
        ("Jane.Doe+moodle@Corp.LOCAL", "Jane.Doe+moodle@corp.local"),
        ("o'brien@example.org", "o'brien@example.org"),
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        ("a@xn--bcher-kva.example", "a@xn--bcher-kva.example"),
        ('"john smith"@example.org', '"john smith"@example.org'),
        ("root@[192.0.2.1]", "root@[192.0.2.1]"),
    ],
)  # fmt: skip
def test_every_address_moodle_accepts_is_accepted_on_any_domain(address, normalised):
    assert validate_email(address) == normalised


@pytest.mark.parametrize(
    "address",
    ["bob@@example.org", "no-at-sign.example.org", "a b@example.org", "a..b@example.org",
     "@example.org", "a@", "a@-corp.local", "a@corp_x.local", "x@deleted.invalid"],
)  # fmt: skip
def test_what_is_not_an_address_is_refused_with_the_reason(address):
    with pytest.raises(ValueError, match=r"\S"):
        validate_email(address)


@pytest.mark.parametrize(
    "address", ["ü@x.com", "zoë@bücher.example", "josé.garcía@example.org", '"ü"@x.com']
)
def test_non_ascii_before_the_at_is_refused_as_moodle_refuses_it(address):
    assert not moodle_accepts(address)
    with pytest.raises(ValueError, match=r"non-ASCII characters before the @ \(\S+\)"):
        validate_email(address)


def test_a_csv_row_with_non_ascii_before_the_at_is_a_problem_an_idn_domain_is_not(tmp_path):
    path = write(tmp_path, (
        "userid,email,firstname,lastname\n"
        "1,zoë@example.org,Zoë,Martin\n"
        "2,zoe@bücher.example,Zoe,Martin\n"
    ))  # fmt: skip
    data = read_csv(path)
    assert [(r.userid, r.email) for r in data.rows] == [(2, "zoe@xn--bcher-kva.example")]
    assert [p.line for p in data.problems] == [2]
    assert "email 'zoë@example.org' is not a valid address: non-ASCII" in data.problems[0].message
    assert "(ë)" in data.problems[0].message


def test_addresses_the_sandboxs_moodle_rule_accepts_are_never_refused():
    samples = ["jane@corp.local", "a.b-c_d@x-y.internal", "x!#$%&'*+/=?^_`{|}~@a.test",
               "1@2.example", "UPPER@CASE.LOCAL"]  # fmt: skip
    for address in samples:
        assert moodle_accepts(address)
        validate_email(address)
