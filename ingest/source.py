"""Open an input file as text lines, plain or gzip (detected from its first bytes).

A file is checked before it is read: a directory, a FIFO or device, a file that cannot be
opened and a file that does not start as UTF-8 text each get their own one-line error naming it.
Its bytes are hashed first (SHA-256, the key of its rejects) and only the bytes hashed are read,
so a file that grows during the load is read as it was hashed. A UTF-8 byte-order mark is
dropped. A compressed stream that breaks (ends early, fails its CRC, holds garbage) ends the
lines where it broke; `stopped` then says at which line and why, and the partial line is never
handed out as a line of the file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from wattwatch.errors import WattwatchError

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, dropped
MAX_TAIL = 65536  # at most this much of a line cut by a broken stream is kept
SNIFF_BYTES = 65536  # the start of the text checked for UTF-8 and NUL bytes
HASH_CHUNK = 1 << 20
BLOCK_BYTES = 1 << 22  # text handed out at a time by TextSource.blocks
# What a broken stream raises while it is read: EOFError (ended early), gzip.BadGzipFile (an
# OSError: CRC or length check failed, trailing garbage), zlib.error (corrupt deflate data).
STREAM_ERRORS = (EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class Stop:
    """Where a broken stream stopped: its line number, the partial text read of that line (empty
    when it broke between lines) and the error."""

    line: int
    raw: str
    error: str


def check_file(path: Path) -> None:
    """Raise a one-line error naming `path` unless it is a regular file that can be opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise WattwatchError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise WattwatchError(f"{path}: no such file (a parent of it is a file, not a directory)") from None
    except OSError as exc:
        raise WattwatchError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise WattwatchError(f"{path}: is a directory, not a file; name the files in it")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        raise WattwatchError(f"{path}: is {kind}, not a regular file; save the data to a file first")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise WattwatchError(f"{path}: cannot read: {exc.strerror}") from None


class _Bounded(io.RawIOBase):
    """The first `size` bytes of a file, under a gzip reader: the bytes that were hashed."""

    def __init__(self, raw, size: int):
        self.raw, self.remaining = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self.remaining)
        if wanted <= 0:
            return 0
        got = self.raw.readinto(memoryview(buffer)[:wanted]) or 0
        self.remaining -= got
        return got


class _Broken(Exception):
    """Raised through the text layer where the stream below broke; the reader has the error."""


class _Reader:
    """The bytes of the file as read: at most `size` of them (the bytes hashed, even if a plain
    file grows; None: no bound), the sniffed start first. Where the stream below breaks, read1
    returns what it still had, then raises _Broken and keeps the error."""

    def __init__(self, read1, size: int | None):
        self._read1 = read1
        self.remaining = size
        self.error: BaseException | None = None
        self._pending = b""

    def _next(self, size: int) -> bytes:
        if self.error is not None:
            return b""
        if self.remaining is not None:
            size = min(size, self.remaining)
            if size <= 0:
                return b""
        try:
            # One read of the stream below, so all it produced before breaking is handed out
            # (a read(n) filling n bytes would drop it with the error).
            data = self._read1(size)
        except STREAM_ERRORS as exc:
            self.error = exc
            return b""
        if self.remaining is not None:
            self.remaining -= len(data)
        return data

    def start(self, size: int) -> bytes:
        """Up to `size` bytes from the start (fewer if the stream ends or breaks), which read1
        then hands out again; a UTF-8 byte-order mark among them is dropped."""
        chunks, have = [], 0
        while have < size and (data := self._next(size - have)):
            chunks.append(data)
            have += len(data)
        head = b"".join(chunks)
        self._pending = head[3:] if head.startswith(BOM) else head
        return head

    def read1(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        data = self._next(size)
        if not data and self.error is not None:
            raise _Broken()
        return data


def numbered_lines(blocks: Iterable[tuple[int, list[str]]]) -> Iterator[tuple[int, str]]:
    """(line number, line) of blocks as TextSource.blocks gives them, blank lines left out."""
    for start, lines in blocks:
        for number, text in enumerate(lines, start):
            if text and not text.isspace():
                yield number, text


def _split_lines(text: str) -> list[str]:
    """The lines of `text`, split as universal newlines split them (not at the other line
    boundaries of str.splitlines); the last line may lack its newline."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # Windows line ends, at C speed
        if "\r" in text:
            return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({text})"
    return text


def _not_text(head: bytes) -> str | None:
    """Why the start of a file is not UTF-8 text, or None."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"binary data (a NUL byte at byte {nul + 1})"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and len(head) - exc.start < 4:
            return None  # a character cut by the end of the sample
        return (f"byte 0x{head[exc.start]:02x} at byte {exc.start + 1} is not UTF-8; convert the "
                "file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)")
    return None


class TextSource:
    """One input file: its SHA-256 and its numbered lines. Use as a context manager."""

    def __init__(self, path: Path):
        check_file(path)
        self.path = path
        self.stopped: Stop | None = None
        try:
            raw = open(path, "rb", buffering=0)
        except OSError as exc:
            raise WattwatchError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            self.sha256, size, self.compressed = self._hash(raw)
            raw.seek(0)
            if self.compressed:
                stream = gzip.GzipFile(fileobj=io.BufferedReader(_Bounded(raw, size), HASH_CHUNK),
                                       mode="rb")
                self._reader = _Reader(stream.read1, None)
            else:
                self._reader = _Reader(raw.read, size)
            problem = _not_text(self._reader.start(SNIFF_BYTES))
            if problem:
                raise WattwatchError(f"{path}: not a text file: {problem}")
        except BaseException:
            raw.close()
            raise
        self._raw = raw

    def _hash(self, raw) -> tuple[str, int, bool]:
        digest, size, first = hashlib.sha256(), 0, b""
        try:
            while chunk := raw.read(HASH_CHUNK):
                if not size:
                    first = chunk[:2]
                digest.update(chunk)
                size += len(chunk)
        except OSError as exc:
            raise WattwatchError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        return digest.hexdigest(), size, first == GZIP_MAGIC

    def blocks(self, size: int = BLOCK_BYTES) -> Iterator[tuple[int, list[str]]]:
        """(1-based number of the first line, lines without their newlines) for about `size`
        bytes at a time; blank lines are kept, so numbers follow the file. Lines end at \n, \r\n
        or \r, as universal newlines read them; a stray invalid byte becomes U+FFFD in its line.
        Where a broken stream stops them, `stopped` is set and the partial line is not handed
        out."""
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        number, carry = 1, ""
        while True:
            try:
                data = self._reader.read1(size)
            except _Broken:
                partial = (carry + decode(b"", final=True))[:MAX_TAIL].rstrip("\r\n")
                self.stopped = Stop(number, partial, _describe(self._reader.error))
                return
            text = carry + decode(data, final=not data)
            if data:
                # Up to the last line end; a \r at the very end may be the first half of \r\n.
                end = len(text) - 1 if text.endswith("\r") else len(text)
                cut = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end)) + 1
                text, carry = text[:cut], text[cut:]
            if text:
                lines = _split_lines(text)
                yield number, lines
                number += len(lines)
            if not data:
                return

    def lines(self) -> Iterator[tuple[int, str]]:
        """(1-based line number, line without its newline), blank lines left out; see blocks()."""
        return numbered_lines(self.blocks())

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> TextSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
