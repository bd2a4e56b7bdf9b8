"""The wattwatch command as users run it: help everywhere, configuration errors."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.cli import build_parser

# The console script installed beside the interpreter running the tests (the venv's).
WATTWATCH = shutil.which("wattwatch", path=str(Path(sys.executable).parent)) or shutil.which("wattwatch")


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed console command with only the given WATTWATCH_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    clean.update(env or {})
    return subprocess.run([WATTWATCH, *args], capture_output=True, text=True, env=clean,
                          cwd=cwd, timeout=timeout)


def test_console_command_is_installed():
    assert WATTWATCH, "the wattwatch console script is not on PATH: pip install -e . first"


def command_paths(parser=None, prefix=()) -> list[list[str]]:
    """Every command path of the CLI (wattwatch, wattwatch db, wattwatch db migrate, ...)."""
    parser = parser or build_parser()
    paths = [list(prefix)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += command_paths(child, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "top")
def test_help_everywhere(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: wattwatch")


def test_help_of_the_installed_command(tmp_path):
    result = run_cli(["ingest", "file", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: wattwatch ingest file")


def test_every_subcommand_of_the_design_exists():
    top = {path[0] for path in command_paths() if len(path) == 1}
    assert top == {"db", "ingest", "detect", "drift", "export", "demo"}
    assert ["db", "migrate"] in command_paths() and ["ingest", "file"] in command_paths()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_database_url(tmp_path):
    line = one_line_error(run_cli(["db", "status"], cwd=tmp_path))
    assert line == "wattwatch db: configuration error: WATTWATCH_DATABASE_URL is not set"


@pytest.mark.parametrize("url, expected", [
    ("not a url", "expected a PostgreSQL URL"),
    ("http://example.org/db", "expected a PostgreSQL URL"),
    ("postgresql://user@localhost:notaport/db", "malformed URL"),
    ("postgresql:///db", "names no host"),
])
def test_malformed_database_url(url, expected, tmp_path):
    line = one_line_error(run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}, tmp_path))
    assert "WATTWATCH_DATABASE_URL is invalid" in line
    assert expected in line


@pytest.mark.parametrize("url", [
    "postgresql://u:kiwi@mango@db.example:5432/db",
    "postgresql://u:kiwi@db.example:notaport/db",
    "postgresql://u:kiwi/mango@db.example:5432/db",
    "postgresql://u:kiwi#mango@db.example:5432/db",
    "postgresql://u:kiwi%zzmango@db.example:5432/db",
    "postgresql://u:kiwi mango@db.example:5432/db",
    "postgresql://u:kiwi[mango@db.example:5432/db",
])
def test_a_malformed_url_never_shows_its_password(url, tmp_path):
    # these used to print 'kiwi' or 'mango' (the password) as a host, port or libpq parse error
    result = run_cli(["db", "status"], {"WATTWATCH_DATABASE_URL": url}, tmp_path)
    line = one_line_error(result)
    assert line.startswith("wattwatch db: configuration error: WATTWATCH_DATABASE_URL is invalid: "
                           "malformed URL: ")
    assert "percent-encode" in line
    assert "kiwi" not in result.stderr and "mango" not in result.stderr


def test_invalid_number_names_its_variable(tmp_path):
    env = {"WATTWATCH_DATABASE_URL": "postgresql://u@127.0.0.1/db",
           "WATTWATCH_CONNECT_ATTEMPTS": "many"}
    line = one_line_error(run_cli(["db", "status"], env, tmp_path))
    assert "WATTWATCH_CONNECT_ATTEMPTS is invalid" in line


def test_nan_setting_is_refused_as_not_finite(tmp_path):
    env = {"WATTWATCH_DATABASE_URL": "postgresql://u@127.0.0.1/db",
           "WATTWATCH_DETECTOR_TRAIN_DAYS": "nan"}
    line = one_line_error(run_cli(["detect", "train"], env, tmp_path))
    assert line == ("wattwatch detect: configuration error: WATTWATCH_DETECTOR_TRAIN_DAYS is "
                    "invalid: must be a finite number, got nan")


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("WATTWATCH_DATABASE_URL=http://from-dotenv/db\n")
    line = one_line_error(run_cli(["db", "status"], cwd=tmp_path))
    assert "WATTWATCH_DATABASE_URL is invalid" in line


def test_unreachable_server_fails_within_bounded_time(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"WATTWATCH_DATABASE_URL": f"postgresql://wattwatch:secret-pw@127.0.0.1:{port}/wattwatch",
           "WATTWATCH_CONNECT_ATTEMPTS": "3", "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2"}
    started = time.monotonic()
    line = one_line_error(run_cli(["db", "migrate"], env, tmp_path))
    elapsed = time.monotonic() - started
    assert line.startswith(f"wattwatch db: cannot connect to the database at wattwatch@127.0.0.1:{port}/wattwatch after 3 attempt(s)")
    assert "secret-pw" not in line
    assert elapsed < 20


def test_bad_timestamp_is_a_usage_error(tmp_path):
    result = run_cli(["db", "maintain", "--refresh-from", "yesterday"], cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --refresh-from: expected a date (2007-01-01)" in result.stderr
    assert "ISO 8601 with an offset" in result.stderr
    assert result.stderr.rstrip().endswith("got 'yesterday'")


def time_options(parser=None, prefix=()) -> dict[tuple[str, ...], argparse.Action]:
    """Every option of every command that takes a time, by command path and option string."""
    parser = parser or build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(time_options(child, (*prefix, name)))
        elif action.type is timestamp:
            found[(*prefix, action.option_strings[-1])] = action
    return found


def test_the_time_options_are_all_known():
    assert set(time_options()) == {
        ("db", "maintain", "--refresh-from"), ("db", "maintain", "--refresh-to"),
        ("ingest", "simulate", "--from"), ("ingest", "simulate", "--to"),
        ("detect", "train", "--from"), ("detect", "train", "--to"),
        ("drift", "run", "--current-to"), ("drift", "run", "--reference-from"),
        ("drift", "run", "--reference-to"),
    }


@pytest.mark.parametrize("path", sorted(time_options()), ids=" ".join)
@pytest.mark.parametrize("text, expected", [
    ("2006-12-16", datetime(2006, 12, 16, tzinfo=timezone.utc)),
    ("2006-12-16 17:24:00", datetime(2006, 12, 16, 17, 24, tzinfo=timezone.utc)),
    ("2006-12-16T17:24Z", datetime(2006, 12, 16, 17, 24, tzinfo=timezone.utc)),
    ("2006-12-16T18:24+01:00", datetime(2006, 12, 16, 17, 24, tzinfo=timezone.utc)),
])
def test_every_time_option_takes_dates_naive_utc_and_offsets(path, text, expected):
    *command, option = path
    args = build_parser().parse_args([*command, option, text])
    value = getattr(args, time_options()[path].dest)
    assert value == expected and value.tzinfo is not None


def test_detect_train_from_a_date():
    args = build_parser().parse_args(["detect", "train", "--from", "2006-12-16",
                                      "--to", "2007-01-01T10:00"])
    assert args.start == datetime(2006, 12, 16, tzinfo=timezone.utc)
    assert args.end == datetime(2007, 1, 1, 10, tzinfo=timezone.utc)


def test_time_option_help_says_what_it_takes():
    options = time_options()
    for (*command, option), action in options.items():
        if TIME_HELP in action.help:
            continue
        other = re.search(r"same formats as (--[a-z-]+)", action.help)
        assert other, (command, option, action.help)
        assert TIME_HELP in options[(*command, other.group(1))].help
