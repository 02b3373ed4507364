"""Loading the benchmark directory: the real loader for the school skeleton, bulk
rows for the families.

``python -m chat directory load`` checks the whole file and upserts row by row
(a SELECT and a flush per row, each an aiosqlite thread round trip): about
40 s for 4,000 families and 6.5 minutes for 18,000 on this machine, longer
than the whole benchmark may take.  So:

1. the whole generated file is checked with :func:`chat.directory.validate`
   (the loader's own all-or-nothing checks);
2. the skeleton — organisation, schools, groups, staff — goes through the real
   command, ``python -m chat directory load``, so schools and staff get exactly
   the columns the loader gives them (features, working hours, notices);
3. the students, guardians and guardianships, which are plain rows, are
   inserted in bulk through the hub's own models (``chat.storage.models``)
   with the values ``chat.directory`` would write, in one transaction.

The loader's speed is itself reported (``directory load`` in the report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any


def split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    skeleton = {k: data[k] for k in ("organisations", "schools", "groups", "staff")}
    families = {"students": data["students"], "guardians": data["guardians"]}
    return skeleton, families


def cli_load(path: Path, env: dict[str, str], cwd: Path) -> float:
    """``python -m chat directory load PATH``; returns the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "chat", "directory", "load", str(path)], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"directory load failed: {result.stderr[-2000:]}")
    return time.monotonic() - started


async def bulk_families(database_url: str, families: dict[str, Any]) -> float:
    """Insert students, their guardians and the guardianships in one transaction."""
    from sqlalchemy import insert, select

    from chat.config import load_settings
    from chat.policies.facts import Role
    from chat.storage.db import create_engine, session_factory
    from chat.storage.models import Group, Guardianship, Organisation, Person, School, Student

    started = time.monotonic()
    settings = load_settings({"DATABASE_URL": database_url, "SECRET_KEY": "x" * 32})
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            schools = {code: (sid, org) for sid, code, org in
                       (await session.execute(select(School.id, School.code, School.organisation_id))).all()}
            groups = dict((await session.execute(select(Group.code, Group.id))).all())
            assert (await session.execute(select(Organisation.id))).first() is not None
            # Core executemany (not ORM objects): the same values, a fraction of the time.
            await session.execute(insert(Student), [
                {"organisation_id": schools[s["school"]][1], "school_id": schools[s["school"]][0],
                 "group_id": groups.get(s.get("group")), "first_name": s["first_name"], "last_name": s["last_name"],
                 "date_of_birth": date.fromisoformat(s["date_of_birth"]), "fiche": str(s["fiche"]),
                 "code_permanent": s["code_permanent"]} for s in families["students"]])
            student_ids = dict((await session.execute(select(Student.fiche, Student.id))).all())
            await session.execute(insert(Person), [
                {"email": g["email"].lower(), "name": g["name"], "role": Role.PARENT.value,
                 "language": g.get("language", "fr"), "tokens_valid_after": 0.0} for g in families["guardians"]])
            person_ids = dict((await session.execute(
                select(Person.email, Person.id).where(Person.role == Role.PARENT.value))).all())
            await session.execute(insert(Guardianship), [
                {"person_id": person_ids[g["email"].lower()], "student_id": student_ids[str(fiche)]}
                for g in families["guardians"] for fiche in g["students"]])
            await session.flush()
    finally:
        await engine.dispose()
    return time.monotonic() - started


async def load(path: Path, data: dict[str, Any], database_url: str, env: dict[str, str], workdir: Path) -> dict[str, float]:
    """Check the whole directory, load the skeleton with the CLI, bulk-insert the families."""
    from chat.directory import validate

    validate(data)
    skeleton, families = split(data)
    skeleton_path = path.with_name(path.stem + "-skeleton.json")
    skeleton_path.write_text(json.dumps(skeleton), encoding="utf-8")
    env = {**env, "DATABASE_URL": database_url}
    cli_seconds = cli_load(skeleton_path, env, workdir)
    bulk_seconds = await bulk_families(database_url, families)
    return {"skeleton_cli_seconds": cli_seconds, "families_bulk_seconds": bulk_seconds,
            "families": len(families["guardians"])}


def loader_speed(data_small: dict[str, Any], env: dict[str, str], workdir: Path) -> dict[str, float]:
    """Time the real ``directory load`` on a small directory into a scratch SQLite file."""
    path = workdir / "loader-speed.json"
    path.write_text(json.dumps(data_small), encoding="utf-8")
    db = workdir / "loader-speed.db"
    seconds = cli_load(path, {**env, "DATABASE_URL": f"sqlite:///{db}"}, workdir)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(str(db) + suffix)
        except FileNotFoundError:
            pass
    return {"families": len(data_small["guardians"]), "seconds": seconds}
