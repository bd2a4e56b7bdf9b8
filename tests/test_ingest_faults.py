"""Nothing lost and nothing twice, under every fault: `wattwatch ingest file` against the real
TimescaleDB with an overlong meter id, rows the database refuses, a truncated or corrupt gzip
stream, rejects of files that share a name or a file loaded for two meters, a byte-order mark,
and paths that are no readable text file. Every run keeps read = loaded + duplicates + rejected,
and every rejected line is in ingest_rejects with its reason."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import psycopg
import pytest

from ingest.parse import METER_ID_MAX_LENGTH, meter_id_problem
from ingest.source import check_file
from tests.test_cli import run_cli
from wattwatch.errors import WattwatchError


def load(url: str, *args: str, env: dict | None = None, status: int = 0
         ) -> tuple[dict, subprocess.CompletedProcess]:
    """`wattwatch ingest file ... --json`: the summary (checked to balance) and the process."""
    result = run_cli(["ingest", "file", *args, "--json"], {"WATTWATCH_DATABASE_URL": url, **(env or {})},
                     timeout=180)
    assert result.returncode == status, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == summary["loaded"] + summary["duplicates"] + summary["rejected"]
    assert summary["rejected"] == sum(summary["rejected_by_reason"].values())
    return summary, result


def rejects(url: str, path: Path, *columns: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {', '.join(columns)} FROM ingest_rejects WHERE source = %s "
                            "ORDER BY line_number, meter_id, reject_id", (str(path),)).fetchall()


def stored(url: str, meter_like: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM readings WHERE meter_id LIKE %s",
                            (meter_like,)).fetchone()[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# 3. An overlong meter id is a reject, not the end of the load.

def test_an_overlong_meter_id_is_rejected_and_the_other_meters_load(db_url, tmp_path):
    path = tmp_path / "meters.csv"
    overlong = "M" * 200
    lines = ["time,meter,active_power_kw"]
    for minute in range(60):
        for meter in range(7):
            lines.append(f"2026-04-01T01:{minute:02d}:00Z,long-{meter},{meter + minute / 100}")
        if minute == 30:
            lines.append(f"2026-04-01T01:30:00Z,{overlong},1.0")  # line 219
    path.write_text("\n".join(lines) + "\n")
    summary, _ = load(db_url, str(path))
    assert (summary["read"], summary["loaded"], summary["duplicates"]) == (421, 420, 0)
    assert summary["rejected_by_reason"] == {"invalid_meter": 1}
    assert stored(db_url, "long-%") == 420
    [(line, reason, detail, raw, meter)] = rejects(db_url, path, "line_number", "reason", "detail",
                                                   "raw", "meter_id")
    assert (line, reason, raw, meter) == (219, "invalid_meter", lines[218], None)
    assert detail.startswith("meter id of 200 characters, longer than 128")


def test_an_overlong_fixed_meter_is_one_line_before_anything_is_read(db_url, tmp_path):
    path = tmp_path / "fixed.csv"
    path.write_text("time,active_power_kw\n2026-04-01T00:00:00Z,1.0\n")
    result = run_cli(["ingest", "file", str(path), "--meter", "m" * 129],
                     {"WATTWATCH_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert result.stderr.strip() == ("wattwatch ingest: --meter: meter id of 129 characters, longer "
                                     f"than 128: {'m' * 40!r}...")


def test_a_simulator_prefix_making_overlong_ids_is_one_line(db_url):
    result = run_cli(["ingest", "simulate", "--prefix", "p" * 124, "--meters", "2", "--from",
                      "2026-01-01T00:00:00+00:00", "--to", "2026-01-01T01:00:00+00:00"],
                     {"WATTWATCH_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("wattwatch ingest: --prefix: meter id of 129 characters")


def test_the_meter_rule_is_the_schemas_check(conn):
    definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE conname = 'meters_meter_id_check'").fetchone()[0]
    assert f"length(meter_id) <= {METER_ID_MAX_LENGTH}" in definition
    assert "meter_id <> ''::text" in definition
    for meter in ("", "é" * METER_ID_MAX_LENGTH, "é" * (METER_ID_MAX_LENGTH + 1)):
        try:
            with conn.transaction():
                conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter,))
                accepted = True
                raise psycopg.Rollback()
        except psycopg.errors.CheckViolation:
            accepted = False
        assert accepted == (meter_id_problem(meter) is None), len(meter)


# 3. Any other row the database refuses is a reject; the batch's other rows load.

def refused_file(path: Path) -> tuple[list[str], set[int], int]:
    """3,000 readings of three meters; some the test constraint refuses, and one meter id with a
    NUL (PostgreSQL text cannot hold it) after the first 64 KiB. Returns the lines, the numbers
    of the refused lines, and the NUL line's number."""
    lines = ["time,meter,active_power_kw,voltage_v"]
    refused = set()
    for index in range(3000):
        kw = 7.777 if index % 1000 == 17 else round(index % 50 / 10, 1)
        meter = f"ref-{index % 3}" if index != 2600 else "ref\x00nul"
        lines.append(f"2026-05-{1 + index // 1440:02d}T{index % 1440 // 60:02d}:{index % 60:02d}:00Z,"
                     f"{meter},{kw},230")
        if kw == 7.777:
            refused.add(index + 2)
    path.write_text("\n".join(lines) + "\n")
    return lines, refused, 2602


def test_rows_the_database_refuses_are_rejects_and_a_rerun_records_them_once(make_database, tmp_path):
    url = make_database("refused")
    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:  # a rule the parser does not know
        conn.execute("ALTER TABLE readings ADD CONSTRAINT test_no_7777 "
                     "CHECK (active_power_kw IS DISTINCT FROM 7.777)")
    path = tmp_path / "refused.csv"
    lines, refused, nul_line = refused_file(path)
    env = {"WATTWATCH_INGEST_BATCH_ROWS": "700"}
    first, _ = load(url, str(path), env=env)
    assert (first["read"], first["loaded"], first["duplicates"]) == (3000, 3000 - len(refused) - 1, 0)
    assert first["rejected_by_reason"] == {"database_refused": len(refused) + 1}
    recorded = rejects(url, path, "line_number", "reason", "detail", "raw", "meter_id")
    assert [r[0] for r in recorded] == sorted(refused | {nul_line})
    for line, reason, detail, raw, meter in recorded:
        assert reason == "database_refused"
        if line == nul_line:
            assert detail == ("the database refused meter id: PostgreSQL text fields cannot "
                              "contain NUL (0x00) bytes")
            assert raw == lines[line - 1].replace("\x00", "\\x00") and meter == "ref\\x00nul"
        else:
            assert detail == ('the database refused the row: new row for relation "'
                              + detail.split('"')[1] + '" violates check constraint "test_no_7777"')
            assert raw == lines[line - 1] and meter == f"ref-{(line - 2) % 3}"
    assert stored(url, "ref-%") == first["loaded"]

    # Again: every stored row is a duplicate (the staging path refuses the same rows), and no
    # reject is recorded twice.
    again, _ = load(url, str(path), env=env)
    assert (again["loaded"], again["duplicates"]) == (0, first["loaded"])
    assert again["rejected_by_reason"] == first["rejected_by_reason"]
    assert rejects(url, path, "line_number", "reason", "detail", "raw", "meter_id") == recorded


# 4. A truncated or corrupt gzip stream ends the file where it breaks, with the rows before it
#    accounted for, the stop recorded as a reject, and exit status 1 after the summary.

GZIP_ROWS = 30_000


def gzip_rows(path: Path) -> tuple[str, bytes]:
    text = "time,meter,active_power_kw\n" + "".join(
        f"2026-06-{1 + i // 1440:02d}T{i % 1440 // 60:02d}:{i % 60:02d}:00Z,gz,{i % 97 / 10}\n"
        for i in range(GZIP_ROWS))
    return text, gzip.compress(text.encode())


def test_a_truncated_gzip_loads_what_it_holds_and_records_where_it_stopped(make_database, tmp_path):
    url = make_database("truncated")
    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}).returncode == 0
    text, data = gzip_rows(tmp_path)
    path = tmp_path / "export.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    # What zlib can recover of the cut stream: complete lines, then the start of the next one.
    recovered = zlib.decompressobj(31).decompress(path.read_bytes()).decode()
    *complete, partial = recovered.split("\n")
    assert partial and len(complete) < GZIP_ROWS
    env = {"WATTWATCH_INGEST_BATCH_ROWS": "2000"}

    summary, result = load(url, str(path), env=env, status=1)
    stop = len(complete) + 1  # the partial line
    assert (summary["read"], summary["loaded"]) == (stop - 1, stop - 2)  # the header is line 1
    assert summary["rejected_by_reason"] == {"truncated_stream": 1}
    message = ("file ended early at line {:,}: Compressed file ended before the end-of-stream "
               "marker was reached").format(stop)
    assert summary["ended_early"] == message
    assert result.stderr.strip() == (f"wattwatch ingest: {path}: {message} (the rows before it are "
                                     "loaded or rejected, see the summary)")
    assert stored(url, "gz") == stop - 2
    assert rejects(url, path, "line_number", "reason", "raw", "source_sha256") == [
        (stop, "truncated_stream", partial, sha256(path))]

    # The same file again: nothing new, the stop recorded once.
    again, _ = load(url, str(path), env=env, status=1)
    assert (again["loaded"], again["duplicates"], again["rejected"]) == (0, stop - 2, 1)
    assert len(rejects(url, path, "line_number")) == 1

    # The plain text summary names the stop too.
    printed = run_cli(["ingest", "file", str(path)], {"WATTWATCH_DATABASE_URL": url})
    assert printed.returncode == 1 and f"  {message}\n" in printed.stdout


def test_a_gzip_failing_its_crc_is_loaded_and_reported_as_ended_early(db_url, tmp_path):
    text, data = gzip_rows(tmp_path)
    corrupt = bytearray(data)
    corrupt[-8] ^= 0xFF  # the CRC-32 in the trailer
    path = tmp_path / "crc.csv.gz"
    path.write_bytes(bytes(corrupt))
    summary, result = load(db_url, str(path), status=1)
    assert (summary["read"], summary["loaded"]) == (GZIP_ROWS + 1, GZIP_ROWS)
    assert summary["rejected_by_reason"] == {"truncated_stream": 1}
    [(line, raw, detail)] = rejects(db_url, path, "line_number", "raw", "detail")
    assert (line, raw) == (GZIP_ROWS + 2, "")  # it broke after the last line
    assert "CRC check failed" in detail and "CRC check failed" in result.stderr


def test_replay_of_a_truncated_gzip_stops_there_too(db_url, tmp_path):
    path = tmp_path / "replay.csv.gz"
    text = "time,meter,active_power_kw\n" + "".join(
        f"2026-07-01T00:{i // 60:02d}:{i % 60:02d}Z,replayed,1.5\n" for i in range(3000))
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])
    result = run_cli(["ingest", "replay", str(path), "--speed", "1000000", "--metrics-port", "0",
                      "--json"], {"WATTWATCH_DATABASE_URL": db_url}, timeout=120)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == summary["loaded"] + 1
    assert summary["rejected_by_reason"] == {"truncated_stream": 1}
    assert "file ended early at line" in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT reason FROM ingest_rejects WHERE source = %s",
                            (f"replay:{path}",)).fetchall() == [("truncated_stream",)]


# 5. Rejects are keyed by the file's content and the meter: none is lost, none recorded twice.

def test_another_file_of_the_same_name_records_its_own_rejects(db_url, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("time,meter,active_power_kw\n2026-08-01T00:00:00Z,exp,1\n"
                    "2026-08-01T00:01:00Z,exp,lots\n")
    first_hash = sha256(path)
    first, _ = load(db_url, str(path))
    path.write_text("time,meter,active_power_kw\n2026-08-02T00:00:00Z,exp,1\n"
                    "2026-08-02T00:01:00Z,exp,-5\n")
    second, _ = load(db_url, str(path))
    again, _ = load(db_url, str(path))
    assert first["rejected_by_reason"] == {"non_numeric": 1}
    assert second["rejected_by_reason"] == again["rejected_by_reason"] == {"out_of_range": 1}
    assert rejects(db_url, path, "source_sha256", "line_number", "reason") == [
        (first_hash, 3, "non_numeric"), (sha256(path), 3, "out_of_range")]


def test_one_file_loaded_for_two_meters_records_the_rejects_of_each(db_url, tmp_path):
    """Each time appears twice with other values (a conflict) and some lines are short."""
    path = tmp_path / "logger.csv"
    lines = ["time,active_power_kw"]
    for i in range(500):
        stamp = f"2026-09-01T{i // 60:02d}:{i % 60:02d}:00Z"
        lines += [f"{stamp},{i / 100}", f"{stamp},{i / 100 + 1}"]
    lines += ["2026-09-02T00:00:00Z"] * 20
    path.write_text("\n".join(lines) + "\n")
    for meter, loaded in (("logger-a", 500), ("logger-b", 500), ("logger-a", 0)):
        summary, _ = load(db_url, str(path), "--meter", meter, env={"WATTWATCH_INGEST_BATCH_ROWS": "300"})
        assert (summary["read"], summary["loaded"], summary["duplicates"]) == (1020, loaded, 500 - loaded)
        assert summary["rejected_by_reason"] == {"column_count": 20, "conflict": 500}
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute(
            "SELECT meter_id, reason, count(*), count(DISTINCT line_number) FROM ingest_rejects "
            "WHERE source = %s GROUP BY 1, 2 ORDER BY 1, 2", (str(path),)).fetchall()
    assert recorded == [("logger-a", "column_count", 20, 20), ("logger-a", "conflict", 500, 500),
                        ("logger-b", "column_count", 20, 20), ("logger-b", "conflict", 500, 500)]


# 6. A UTF-8 byte-order mark is ignored, plain or compressed.

@pytest.mark.parametrize("compressed", [False, True])
def test_a_byte_order_mark_is_ignored(db_url, tmp_path, compressed):
    content = ("\ufeffdate_time,meter,Global_active_power\n"
               f"2026-10-01T00:00:00Z,bom-{compressed},1.25\n").encode()
    path = tmp_path / ("bom.csv.gz" if compressed else "bom.csv")
    path.write_bytes(gzip.compress(content) if compressed else content)
    summary, _ = load(db_url, str(path))
    assert (summary["read"], summary["loaded"]) == (1, 1)
    assert stored(db_url, f"bom-{compressed}") == 1


# 7. A path that is no readable text file: one line naming it, each with its own reason.

def _inside_a_file(path: Path) -> Path:
    path.write_text("time,kw\n")
    return path / "input.csv"


def _writes(data: bytes):
    return lambda path: path.write_bytes(data) and path


CASES = {
    "missing": (lambda path: path, "no such file"),
    "directory": (lambda path: path.mkdir() or path, "is a directory, not a file"),
    "parent is a file": (_inside_a_file, "no such file (a parent of it is a file, not a directory)"),
    "fifo": (lambda path: os.mkfifo(path) or path, "is a FIFO, not a regular file"),
    "binary": (_writes(b"\x00\x01\x02binary"), "not a text file: binary data (a NUL byte at byte 1)"),
    "latin-1": (_writes("date_time;compteur;kW\n2026-01-01 00:00;été;1\n".encode("latin-1")),
                "not a text file: byte 0xe9 at byte 40 is not UTF-8"),
    "utf-16": (_writes("time,kw\n".encode("utf-16")), "not a text file: UTF-16 text"),
    "gzip of binary": (_writes(gzip.compress(bytes(range(256)))),
                       "not a text file: binary data (a NUL byte at byte 1)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_path_that_is_no_text_file_is_one_line_with_its_reason(db_url, tmp_path, case):
    make, message = CASES[case]
    path = make(tmp_path / "input.csv")
    result = run_cli(["ingest", "file", str(path), "--meter", "m"], {"WATTWATCH_DATABASE_URL": db_url})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wattwatch ingest: {path}: ")
    assert message in lines[0]


def test_an_unreadable_file_is_one_line_saying_permission_denied():
    """Root reads every file, so as root the check runs in a child process that became nobody
    (uid 65534), on a file of mode 000 in a directory anyone may enter (pytest's are private);
    the console command itself cannot run as nobody here, its interpreter lives under /root.
    The CLI runs this same check on every path before it connects."""
    directory = Path(tempfile.mkdtemp(prefix="wattwatch-unreadable-"))
    try:
        directory.chmod(0o755)
        path = directory / "secret.csv"
        path.write_text("time,kw\n2026-01-01T00:00:00Z,1\n")
        path.chmod(0)
        message = _check_as_nobody(path) if os.geteuid() == 0 else _check(path)
    finally:
        shutil.rmtree(directory)
    assert message == f"{path}: cannot read: Permission denied"


def _check(path: Path) -> str:
    try:
        check_file(path)
    except WattwatchError as exc:
        return str(exc)
    return "no error"


def _check_as_nobody(path: Path) -> str:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drop root, check, report through the pipe
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, _check(path).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        message = pipe.read()
    os.waitpid(child, 0)
    return message
