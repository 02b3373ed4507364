"""The school directory: checked as a whole before anything is written, then
loaded in one transaction (chat/directory.py), and the demo board built on it.

``validate`` tests are pure (plain dicts); loading tests use the ``engine``
fixture, which runs on both backends with the demo directory already loaded.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from chat import demo, directory
from chat.errors import BadRequest
from chat.storage.db import session_factory
from chat.storage.models import (
    Group,
    GuardianOnFile,
    Guardianship,
    Organisation,
    Person,
    School,
    StaffSchool,
    Student,
    TeacherGroup,
)

DIRECTORY_TABLES = (Organisation, School, Group, Person, StaffSchool, TeacherGroup, Student, Guardianship,
                    GuardianOnFile)


def demo_directory() -> dict[str, Any]:
    return copy.deepcopy(demo.build())


def refusal(data: dict[str, Any]) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        directory.validate(data)
    assert info.value.code == "directory.invalid"
    return info.value


def index_of(items: list[dict[str, Any]], **match: Any) -> int:
    return next(i for i, item in enumerate(items) if all(item.get(k) == v for k, v in match.items()))


async def row_counts(engine) -> dict[str, int]:
    async with session_factory(engine)() as session:
        return {
            model.__name__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
            for model in DIRECTORY_TABLES
        }


# --- validate: what is refused, and where ---------------------------------------------


def test_demo_directory_validates():
    assert directory.validate(demo.build()).data == demo.build()


@pytest.mark.parametrize("fiche", ["123456", "12345678", "12a4567", "ABCDEFG", ""],
                         ids=["6-digits", "8-digits", "letter", "letters", "empty"])
def test_bad_fiche_number_is_refused_naming_the_student(fiche):
    data = demo_directory()
    data["students"][3]["fiche"] = fiche
    assert refusal(data).fields["where"] == "students[3].fiche"


def test_duplicate_fiche_number_is_refused():
    data = demo_directory()
    data["students"][4]["fiche"] = data["students"][1]["fiche"]
    error = refusal(data)
    assert error.fields["where"] == "students[4].fiche"
    assert "duplicate" in error.fields["problem"]


@pytest.mark.parametrize("code", ["ABC123456789", "abcd12345678", "ABCD1234567", "ABCD123456789", "ABCD1234567X"],
                         ids=["3-letters", "lower-case", "7-digits", "9-digits", "letter-at-end"])
def test_bad_permanent_code_is_refused_naming_the_student(code):
    data = demo_directory()
    data["students"][5]["code_permanent"] = code
    assert refusal(data).fields["where"] == "students[5].code_permanent"


def test_duplicate_permanent_code_is_refused():
    data = demo_directory()
    data["students"][6]["code_permanent"] = data["students"][0]["code_permanent"]
    assert refusal(data).fields["where"] == "students[6].code_permanent"


def test_student_of_an_unknown_school_is_refused():
    data = demo_directory()
    data["students"][2]["school"] = "NOWHERE"
    assert refusal(data).fields["where"] == "students[2].school"


def test_student_in_an_unknown_group_is_refused():
    data = demo_directory()
    data["students"][2]["group"] = "ERA-999"
    assert refusal(data).fields["where"] == "students[2].group"


def test_student_in_a_group_of_another_school_is_refused():
    data = demo_directory()
    i = index_of(data["students"], school="ERABLES")
    data["students"][i]["group"] = "FLE-101"
    error = refusal(data)
    assert error.fields["where"] == f"students[{i}].group"
    assert "FLE-101" in error.fields["problem"]


def test_teacher_of_a_group_in_another_school_is_refused():
    data = demo_directory()
    i = index_of(data["staff"], email="nadia.chabot@erables.test")
    data["staff"][i]["groups"] = ["FLE-101"]
    assert refusal(data).fields["where"] == f"staff[{i}].groups"


def test_group_of_an_unknown_school_is_refused():
    data = demo_directory()
    data["groups"][1]["school"] = "NOWHERE"
    assert refusal(data).fields["where"] == "groups[1].school"


def test_guardian_with_the_email_of_a_staff_member_in_other_case_is_refused():
    data = demo_directory()
    data["guardians"][2]["email"] = data["staff"][0]["email"].upper()
    error = refusal(data)
    assert error.fields["where"] == "guardians[2].email"
    assert "duplicate" in error.fields["problem"]


def test_two_guardians_with_the_same_email_are_refused():
    data = demo_directory()
    data["guardians"][3]["email"] = data["guardians"][1]["email"].title()
    assert refusal(data).fields["where"] == "guardians[3].email"


def test_school_of_an_unknown_organisation_is_refused():
    data = demo_directory()
    data["schools"][1]["organisation"] = "CSS-NOWHERE"
    assert refusal(data).fields["where"] == "schools[1].organisation"


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "", "../../etc/passwd"], ids=["unknown", "empty", "path"])
def test_school_with_a_bad_timezone_is_refused(timezone):
    data = demo_directory()
    data["schools"][0]["timezone"] = timezone
    assert refusal(data).fields["where"] == "schools[0].timezone"


@pytest.mark.parametrize("born", ["2015-02-30", "15/02/2015", "", None], ids=["no-such-day", "dmy", "empty", "missing"])
def test_student_with_a_bad_date_of_birth_is_refused(born):
    data = demo_directory()
    data["students"][7]["date_of_birth"] = born
    assert refusal(data).fields["where"] == "students[7].date_of_birth"


def test_guardian_of_an_unknown_fiche_is_refused():
    data = demo_directory()
    data["guardians"][4]["students"] = ["9999999"]
    error = refusal(data)
    assert error.fields["where"] == "guardians[4].students"
    assert "9999999" in error.fields["problem"]


def test_guardian_without_children_is_refused():
    data = demo_directory()
    data["guardians"][4]["students"] = []
    assert refusal(data).fields["where"] == "guardians[4].students"


def test_staff_member_with_an_unknown_role_is_refused():
    data = demo_directory()
    data["staff"][0]["role"] = "parent"
    assert refusal(data).fields["where"] == "staff[0].role"


def test_person_with_an_unsupported_language_is_refused():
    data = demo_directory()
    data["guardians"][0]["language"] = "de"
    assert refusal(data).fields["where"] == "guardians[0].language"


def test_directory_that_is_not_an_object_is_refused():
    assert refusal([]).fields["where"] == "(root)"  # type: ignore[arg-type]


def test_refusal_text_names_the_place_and_says_nothing_was_loaded():
    data = demo_directory()
    data["students"][3]["fiche"] = "123456"
    text = refusal(data).to_dict("en")["message"]
    assert text.startswith("Invalid directory (students[3].fiche): a fiche number is 7 digits, got '123456'")
    assert text.endswith("Nothing was loaded.")


# "$", which also matches before a trailing newline, and "\d" accepts any Unicode
# digit.  "1234567\n", "１２３４５６７" and "ABCD12345678\n" pass validate(); the last
# one is 13 characters and then fails PostgreSQL's VARCHAR(12) in the middle of load().
@pytest.mark.parametrize(
    ("field", "value"),
    [("fiche", "1999999\n"), ("fiche", "１９９９９９９"), ("code_permanent", "ZZZZ12345678\n")],
    ids=["fiche-newline", "fiche-fullwidth-digits", "code-newline"],
)
def test_identifier_with_trailing_newline_or_non_ascii_digits_is_refused(field, value):
    data = demo_directory()
    student = {**data["students"][0], "fiche": "1999999", "code_permanent": "ZZZZ12345678", field: value}
    data["students"].append(student)
    assert refusal(data).fields["where"] == f"students[{len(data['students']) - 1}].{field}"


# --- the demo board -------------------------------------------------------------------


def test_demo_has_one_organisation_two_schools_and_at_least_six_groups():
    data = demo.build()
    assert len(data["organisations"]) == 1
    assert [s["code"] for s in data["schools"]] == ["ERABLES", "FLEUVE"]
    assert len(data["groups"]) >= 6


def test_demo_has_about_ten_staff_thirty_students_and_about_forty_guardians():
    data = demo.build()
    assert 9 <= len(data["staff"]) <= 12
    assert len(data["students"]) == 30
    assert 35 <= len(data["guardians"]) <= 45


def test_demo_has_every_staff_role_including_transport():
    roles = Counter(p["role"] for p in demo.build()["staff"])
    assert set(roles) == {"teacher", "staff", "direction", "transport"}


def test_demo_has_a_student_with_two_guardians_with_different_emails():
    data = demo.build()
    guardians_of: dict[str, list[str]] = {}
    for guardian in data["guardians"]:
        for fiche in guardian["students"]:
            guardians_of.setdefault(fiche, []).append(guardian["email"])
    assert any(len(set(emails)) == 2 for emails in guardians_of.values())


def test_demo_has_a_guardian_with_children_in_both_schools():
    data = demo.build()
    school_of = {s["fiche"]: s["school"] for s in data["students"]}
    assert any({school_of[f] for f in g["students"]} == {"ERABLES", "FLEUVE"} for g in data["guardians"])


def test_demo_named_family_lea_has_marie_and_jean_as_only_guardians():
    data = demo.build()
    lea = next(s for s in data["students"] if s["first_name"] == "Léa")
    guardians = sorted(g["email"] for g in data["guardians"] if lea["fiche"] in g["students"])
    assert guardians == ["jean.tremblay@parent.test", "marie.tremblay@parent.test"]
    assert lea["group"] == "ERA-301"


def test_demo_people_printed_by_the_cli_are_in_the_directory():
    data = demo.build()
    emails = {p["email"] for p in data["staff"] + data["guardians"]}
    assert set(demo.DEMO_PEOPLE) <= emails


def test_demo_is_deterministic():
    assert demo.build() == demo.build()


# --- loading (both backends) ----------------------------------------------------------


async def test_demo_load_wrote_every_kind_of_row(engine):
    data = demo.build()
    counts = await row_counts(engine)
    assert counts["Organisation"] == 1
    assert counts["School"] == 2
    assert counts["Group"] == len(data["groups"])
    assert counts["Person"] == len(data["staff"]) + len(data["guardians"])
    assert counts["Student"] == 30
    # R20: every guardian entry puts its children on file; only "associated" ones are associated.
    assert counts["GuardianOnFile"] == sum(len(g["students"]) for g in data["guardians"])
    assert counts["Guardianship"] == sum(len(g["students"]) for g in data["guardians"] if g.get("associated"))
    assert counts["Guardianship"] < counts["GuardianOnFile"]  # the demo has one parent who has not yet


async def test_loading_the_demo_again_changes_no_row_count(engine):
    before = await row_counts(engine)
    counts = await directory.load(engine, directory.validate(demo.build()))
    assert counts["students"] == 30
    assert await row_counts(engine) == before


async def test_loading_again_updates_by_natural_key(engine):
    data = demo_directory()
    i = index_of(data["staff"], email="nadia.chabot@erables.test")
    data["staff"][i]["name"] = "Nadia Chabot-Roy"
    data["staff"][i]["email"] = "Nadia.Chabot@Erables.test"  # e-mails are keys whatever their case
    before = await row_counts(engine)
    await directory.load(engine, directory.validate(data))
    async with session_factory(engine)() as session:
        names = (await session.execute(select(Person.name).where(Person.email == "nadia.chabot@erables.test"))).all()
    assert names == [("Nadia Chabot-Roy",)]
    assert await row_counts(engine) == before


async def test_invalid_directory_file_changes_nothing(engine, tmp_path):
    data = demo_directory()
    data["staff"].append({"email": "nouvelle@erables.test", "name": "Nouvelle", "role": "staff",
                          "schools": ["ERABLES"]})
    data["students"][3]["fiche"] = "123456"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    before = await row_counts(engine)
    with pytest.raises(BadRequest) as info:
        await directory.load(engine, directory.read_file(path))
    assert info.value.fields["where"] == "students[3].fiche"
    assert await row_counts(engine) == before


async def test_directory_file_that_is_not_json_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"organisations": [', encoding="utf-8")
    with pytest.raises(BadRequest) as info:
        directory.read_file(path)
    assert info.value.code == "directory.invalid"
    assert info.value.fields["where"] == str(path)


def directory_with_newcomers(permanent_code: str) -> dict[str, Any]:
    """A re-export of the demo: the first student has left, and there are a new
    staff member (written early in load) and a new student (written late) whose
    permanent code is ``permanent_code``."""
    data = demo_directory()
    gone = data["students"].pop(0)
    for guardian in data["guardians"]:
        guardian["students"] = [f for f in guardian["students"] if f != gone["fiche"]]
    data["guardians"] = [g for g in data["guardians"] if g["students"]]
    data["staff"].append({"email": "nouvelle@erables.test", "name": "Nouvelle Venue", "role": "staff",
                          "schools": ["ERABLES"]})
    newcomer = {**gone, "fiche": "1999999", "first_name": "Nouveau", "code_permanent": permanent_code}
    data["students"].append(newcomer)
    return data


async def test_load_is_all_or_nothing_when_the_database_refuses_a_row_mid_way(engine):
    # The file is valid on its own (validate passes), but the new student's permanent
    # code still belongs to the departed student in the database: the unique
    # constraint fails after the staff member was flushed.  Nothing may remain.
    taken = demo.build()["students"][0]["code_permanent"]
    data = directory.validate(directory_with_newcomers(taken))
    before = await row_counts(engine)
    with pytest.raises(Exception):
        await directory.load(engine, data)
    assert await row_counts(engine) == before
    async with session_factory(engine)() as session:
        assert (await session.execute(select(Person).where(Person.email == "nouvelle@erables.test"))).first() is None


async def test_same_newcomers_with_a_free_permanent_code_are_loaded(engine):
    # Control for the test above: without the conflict, the same file adds both rows.
    before = await row_counts(engine)
    await directory.load(engine, directory.validate(directory_with_newcomers("ZZZZ12345678")))
    after = await row_counts(engine)
    assert (after["Person"], after["Student"]) == (before["Person"] + 1, before["Student"] + 1)
