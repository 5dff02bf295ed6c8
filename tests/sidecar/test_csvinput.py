"""CSV input: problems by physical line number, nothing fatal but an unusable file."""

import pytest

from sidecar.csvinput import read_csv
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
