"""Service log lines: one format for every component, the level from the settings, and an
unexpected error as one line with its traceback only at DEBUG."""

from __future__ import annotations

import re

import pytest

from wattwatch import logs

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (DEBUG|INFO|WARNING|ERROR) (\S+): (.*)$")


@pytest.fixture(autouse=True)
def info_level():
    yield
    logs.configure("INFO")


def fail() -> ValueError:
    try:
        raise ValueError("meter m1 has no readings\nDETAIL: a second line never shown")
    except ValueError as exc:
        return exc


def test_lines_carry_time_level_and_component(capsys):
    logs.configure("INFO")
    logs.get("detector").info("cycle: %d readings scored", 5)
    logs.get("ingest").debug("not shown at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert LINE.match(lines[0]).groups() == ("INFO", "detector", "cycle: 5 readings scored")


def test_an_unexpected_error_is_one_line_and_its_traceback_only_at_debug(capsys):
    logs.configure("INFO")
    logs.unexpected(logs.get("detector"), "meter m1 could not be scored", fail())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert LINE.match(lines[0]).groups() == (
        "ERROR", "detector", "meter m1 could not be scored: ValueError: meter m1 has no readings")
    logs.configure("DEBUG")
    logs.unexpected(logs.get("detector"), "meter m1 could not be scored", fail())
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "a second line never shown" in err


def test_configure_twice_adds_no_second_handler(capsys):
    logs.configure("INFO")
    logs.configure("WARNING")
    logs.get("drift").warning("once")
    assert capsys.readouterr().err.count("once") == 1


def test_the_level_comes_from_the_settings(monkeypatch, capsys):
    from wattwatch.settings import load_settings

    monkeypatch.setenv("WATTWATCH_DATABASE_URL", "postgresql://u:p@127.0.0.1:5432/db")
    monkeypatch.setenv("WATTWATCH_LOG_LEVEL", "WARNING")
    monkeypatch.chdir("/")  # no .env file of the developer's
    load_settings()
    logs.get("export").info("hidden")
    logs.get("export").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "shown" in err
