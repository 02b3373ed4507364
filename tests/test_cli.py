"""The command line, run as people run it: ``python -m chat …`` in a subprocess,
configured only by its environment (a SQLite file and a secret file in
``tmp_path``), judged by its exit status and what it prints.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from chat import auth, demo
from tests.client import WAIT
from tests.conftest import MARIE, REDIS_URL

REPO = Path(__file__).resolve().parent.parent
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
ANY_JWT = re.compile(r"[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}")


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "chat.db"
        self.secret_file = tmp_path / "secret"

    def env(self, **overrides: str) -> dict[str, str]:
        # Only what the CLI needs: nothing from the developer's own configuration leaks in.
        base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "SYSTEMROOT") if key in os.environ}
        base.update(PYTHONPATH=str(REPO), DATABASE_URL=f"sqlite:///{self.db}", CHAT_SECRET_FILE=str(self.secret_file),
                    LOG_LEVEL="warning")
        base.update(overrides)
        return base

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chat", *args], cwd=self.dir, env=self.env(**env),
                              capture_output=True, text=True, timeout=120)

    def people(self) -> dict[str, int]:
        with sqlite3.connect(self.db) as conn:
            return dict(conn.execute("SELECT email, id FROM person"))

    def secret(self) -> str:
        return self.secret_file.read_text().strip()


class Serving:
    """``python -m chat serve …`` running in the background: its standard output
    read line by line as it comes, its standard error kept in a file."""

    def __init__(self, cli: Cli, *args: str, **env: str) -> None:
        self.errors = cli.dir / "serve.stderr"
        with self.errors.open("w") as errors:
            self.process = subprocess.Popen([sys.executable, "-m", "chat", "serve", *args], cwd=cli.dir,
                                            env=cli.env(**env), stdout=subprocess.PIPE, stderr=errors, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, prefix: str) -> list[str]:
        """Every line printed so far, up to the first that starts with ``prefix``."""
        deadline = time.monotonic() + 4 * WAIT  # a bound (start-up on a busy machine), not a timing
        while not (self.seen and self.seen[-1].startswith(prefix)):
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"serve ended ({self.process.wait()}): {self.seen} {self.errors.read_text()}")
            self.seen.append(line)
        return self.seen

    def stop(self) -> str:
        """Stop it as Ctrl-C would; its standard error."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        return self.errors.read_text()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def serving(cli: Cli):
    """Starts ``serve`` with the given arguments; stopped at the end of the test."""
    started: list[Serving] = []

    def start(*args: str, **env: str) -> Serving:
        started.append(Serving(cli, *args, **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def busy_port():
    """A port some other program listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def loaded(cli: Cli) -> Cli:
    """A CLI whose database holds the demo board (loaded by ``python -m chat demo``)."""
    result = cli.run("demo")
    assert result.returncode == 0, result.stderr
    return cli


def tokens_by_email(stdout: str) -> dict[str, str]:
    """The demo listing: a line naming the person (role, name, e-mail), then their token."""
    lines = stdout.splitlines()
    return {
        line.split()[-1]: lines[i + 1].strip()
        for i, line in enumerate(lines[:-1])
        if "@" in line and JWT.match(lines[i + 1].strip())
    }


def write_directory(cli: Cli, data: dict) -> Path:
    path = cli.dir / "directory.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# --- demo and token -------------------------------------------------------------------


def test_demo_prints_a_working_token_for_each_of_the_four_demo_people(cli):
    result = cli.run("demo")
    assert result.returncode == 0, result.stderr
    tokens = tokens_by_email(result.stdout)
    assert set(tokens) == set(demo.DEMO_PEOPLE)
    people = cli.people()
    for email, token in tokens.items():
        assert auth.decode(cli.secret(), token).person_id == people[email]


def test_demo_run_twice_does_not_load_the_board_twice(loaded):
    before = loaded.people()
    result = loaded.run("demo")
    assert result.returncode == 0, result.stderr
    assert set(tokens_by_email(result.stdout)) == set(demo.DEMO_PEOPLE)
    assert loaded.people() == before


def test_token_prints_a_jwt_for_a_directory_person(loaded):
    result = loaded.run("token", "nadia.chabot@erables.test")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert JWT.match(token)
    claims = auth.decode(loaded.secret(), token)
    assert (claims.person_id, claims.role) == (loaded.people()["nadia.chabot@erables.test"], "teacher")


def test_token_email_is_matched_whatever_its_case(loaded):
    result = loaded.run("token", "Marie.Tremblay@Parent.TEST")
    assert result.returncode == 0, result.stderr
    assert auth.decode(loaded.secret(), result.stdout.strip()).person_id == loaded.people()["marie.tremblay@parent.test"]


def test_token_for_an_unknown_email_exits_1_and_names_it(loaded):
    result = loaded.run("token", "unknown@x.test")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "person.not_found" in result.stderr
    assert "unknown@x.test" in result.stderr
    assert "Traceback" not in result.stderr


# --- directory load -------------------------------------------------------------------


def test_directory_load_of_a_valid_file_reports_the_counts(cli):
    data = demo.build()
    result = cli.run("directory", "load", str(write_directory(cli, data)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"loaded: 1 organisations, 2 schools, {len(data['groups'])} groups, {len(data['staff'])} staff, "
        f"30 students, {len(data['guardians'])} guardians"
    )
    assert len(cli.people()) == len(data["staff"]) + len(data["guardians"])


def test_directory_load_with_a_bad_fiche_exits_1_naming_the_place_and_adds_nobody(loaded):
    data = copy.deepcopy(demo.build())
    data["staff"].append({"email": "nouvelle@erables.test", "name": "Nouvelle", "role": "staff", "schools": ["ERABLES"]})
    data["students"][3]["fiche"] = "123456"
    before = loaded.people()
    result = loaded.run("directory", "load", str(write_directory(loaded, data)))
    assert result.returncode == 1
    assert "directory.invalid" in result.stderr
    assert "students[3].fiche" in result.stderr
    assert "Traceback" not in result.stderr
    assert loaded.people() == before


def test_directory_load_of_a_file_that_is_not_json_exits_1_naming_the_file(loaded):
    path = loaded.dir / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    result = loaded.run("directory", "load", str(path))
    assert result.returncode == 1
    assert "directory.invalid" in result.stderr
    assert str(path) in result.stderr


# conflicts with rows already in the database (here: a new student given the permanent
# code of a student already loaded) makes load() raise sqlalchemy IntegrityError; the CLI
# prints a Python traceback instead of a directory.invalid message.  The transaction is
# rolled back (see tests/test_directory.py), only the message is wrong.  Patch in the report.
def test_directory_load_conflicting_with_the_database_exits_1_with_a_clear_message(loaded):
    data = copy.deepcopy(demo.build())
    gone = data["students"].pop(0)
    for guardian in data["guardians"]:
        guardian["students"] = [f for f in guardian["students"] if f != gone["fiche"]]
    data["guardians"] = [g for g in data["guardians"] if g["students"]]
    data["students"].append({**gone, "fiche": "1999999", "first_name": "Nouveau"})  # same permanent code
    before = loaded.people()
    result = loaded.run("directory", "load", str(write_directory(loaded, data)))
    assert loaded.people() == before
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: directory.invalid")


# --- configuration errors stop the start ----------------------------------------------


def test_unsupported_database_url_exits_2_naming_database_url(cli):
    result = cli.run("demo", DATABASE_URL="mysql://x")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(cli.dir.glob("*.db"))


def test_non_numeric_port_exits_2_naming_port(cli):
    result = cli.run("demo", PORT="abc")
    assert result.returncode == 2
    assert "PORT" in result.stderr
    assert "'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_short_secret_key_exits_2_without_echoing_it(cli):
    result = cli.run("token", "nadia.chabot@erables.test", SECRET_KEY="hunter2-short")
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("WEB_CONCURRENCY", "abc", "WEB_CONCURRENCY must be a whole number of worker processes between 1 and 64, "
                               "got 'abc'"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, got 'xml'"),
    ("PORT", "abc", "PORT must be a whole number between 0 and 65535, got 'abc'"),
    ("HOST", "http://0.0.0.0", "HOST must be an address or a host name, such as 127.0.0.1, 0.0.0.0, :: or "
                               "localhost (no http://, no :PORT), got 'http://0.0.0.0'"),
])
def test_serve_with_a_bad_variable_exits_2_with_one_plain_line_before_touching_anything(cli, variable, value,
                                                                                      message):
    result = cli.run("serve", "--demo", **{variable: value})
    assert result.returncode == 2
    assert result.stderr == f"configuration error: {message}\n"
    assert result.stdout == ""
    assert not cli.db.exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--port", "abc"], "argument --port: must be a whole number between 0 and 65535, got 'abc'"),
    (["--port", "70000"], "argument --port: must be a whole number between 0 and 65535, got '70000'"),
    (["--workers", "0"], "argument --workers: must be a whole number of worker processes between 1 and 64, got '0'"),
    (["--host", "localhost:8000"], "argument --host: must be an address or a host name, such as 127.0.0.1, "
                                   "0.0.0.0, :: or localhost (no http://, no :PORT), got 'localhost:8000'"),
])
def test_a_bad_serve_argument_exits_2_with_one_plain_line(cli, arguments, message):
    result = cli.run("serve", *arguments)
    assert result.returncode == 2
    assert result.stderr == f"python -m chat serve: {message} (see python -m chat serve --help)\n"
    assert not cli.db.exists()


def test_more_than_one_worker_without_redis_exits_2_saying_what_to_set(cli):
    result = cli.run("serve", WEB_CONCURRENCY="2")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "REDIS_URL" in result.stderr and "Traceback" not in result.stderr


# --- help -------------------------------------------------------------------------------


def test_help_lists_the_commands_for_people_and_not_the_internal_worker(cli):
    result = cli.run("--help")
    assert result.returncode == 0
    assert "SUPPRESS" not in result.stdout and "worker" not in result.stdout
    assert "usage: python -m chat [-h] COMMAND ..." in result.stdout
    listed = re.findall(r"^    (\S+)", result.stdout, re.MULTILINE)
    assert listed == ["serve", "demo", "token", "directory", "integration", "db"]
    unknown = cli.run("wrkr")
    assert unknown.returncode == 2 and "worker" not in unknown.stderr and unknown.stderr.count("\n") == 1


# --- serve: a busy port, the demo's first screen, the README's example ------------------


@pytest.mark.parametrize("how", ["--port", "PORT"])
def test_serve_on_a_busy_port_says_so_in_one_line_before_migrating_or_printing_people(cli, busy_port, how):
    arguments, env = (["--port", str(busy_port)], {}) if how == "--port" else ([], {"PORT": str(busy_port)})
    result = cli.run("serve", "--demo", *arguments, **env)
    assert result.returncode == 1
    assert result.stderr == (f"error: cannot listen on 127.0.0.1:{busy_port}: port {busy_port} is already in use "
                             "(another server?); choose another with --port N (or PORT=N), or --port 0 (PORT=0) "
                             "to let the system pick a free one\n")
    assert result.stdout == ""  # no "database ready", no demo people
    assert not cli.db.exists()  # nothing migrated


def test_serve_with_workers_on_a_busy_port_says_so_before_migrating(cli, busy_port):
    result = cli.run("serve", "--port", str(busy_port), "--workers", "2", REDIS_URL=REDIS_URL)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{busy_port}: port {busy_port} is already in")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not cli.db.exists()


def test_serve_demo_lists_the_people_without_tokens_and_ends_with_the_address_to_open(cli, serving):
    server = serving("--demo", "--port", "0", LOG_LEVEL="info")  # the default level
    lines = server.until("open ")
    port = int(next(line for line in lines if line.startswith("listening on ")).rsplit(":", 1)[1])
    assert lines[0] == "database ready"
    assert lines[-1] == f"open http://127.0.0.1:{port}/ in a browser and pick a person"
    assert "python -m chat token EMAIL" in "\n".join(lines)
    for email in demo.DEMO_PEOPLE:
        assert any(line.split()[-1] == email for line in lines), email
    assert not any(ANY_JWT.search(line) for line in lines)
    assert max(len(line) for line in lines) <= 100
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/demo/people", timeout=WAIT) as response:
        assert "Marie Tremblay" in response.read().decode()  # the person picker: where tokens come from now
    errors = server.stop()
    assert "alembic" not in errors and "Running upgrade" not in errors  # migrations quiet at the default level
    assert "Traceback" not in errors


def readme_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_works_as_written_and_a_second_run_adds_nothing(cli, serving):
    server = serving("--demo", "--port", "0")
    port = next(line for line in server.until("open ") if line.startswith("listening on ")).rsplit(":", 1)[1]
    (cli.dir / "hello.py").write_text(readme_example(), encoding="utf-8")
    token = cli.run("token", MARIE).stdout.strip()
    runs = [subprocess.run([sys.executable, "hello.py", port, token], cwd=cli.dir, env=cli.env(),
                           capture_output=True, text=True, timeout=4 * WAIT) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "'duplicate': False" in runs[0].stdout and "'duplicate': True" in runs[1].stdout
    with sqlite3.connect(cli.db) as conn:
        assert conn.execute("SELECT count(*) FROM conversation").fetchone() == (1,)
        assert conn.execute("SELECT text FROM message").fetchall() == [("Bonjour Madame Chabot !",)]
