"""Reading task lists: plain text (one task per line) or JSON Lines, from a file, a folder of
chunks, or stdin.

Text: blank lines and lines starting with ``#`` are skipped; CRLF and a UTF-8 BOM are handled;
everything else on the line, leading spaces included, is the payload.
JSON Lines: each non-blank line is one JSON value. A string value is the payload as it is; any
other value is passed on as its compact JSON text. The chart's task ConfigMaps use this format
(one JSON string per line), so text and JSON tasks reach the workers unchanged.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from .defaults import MAX_PAYLOAD_BYTES
from .errors import ConfigError, TaskSourceError

FORMATS = ("auto", "text", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# How much of a task file is read and parsed at once: about 30,000 short tasks.
BLOCK_BYTES = 1024 * 1024
# A payload's length in the fingerprint: 8 bytes, big-endian.
_LENGTH = struct.Struct(">Q")


@dataclass(frozen=True)
class TaskScan:
    """What a full pass over a task source found."""

    count: int
    fingerprint: str


def source_files(path: str) -> list[Path]:
    """The files behind ``path``: itself, or a folder's ``*.jsonl`` chunks in name order."""
    p = Path(path)
    if p.is_dir():
        # Names starting with a dot are a mounted ConfigMap's own bookkeeping (..data).
        visible = [f for f in p.iterdir() if not f.name.startswith(".")]
        files = sorted(f for f in visible if f.suffix in JSONL_SUFFIXES and f.is_file())
        others = sorted(f.name for f in visible if f.suffix not in JSONL_SUFFIXES)
        if others:
            raise TaskSourceError(
                f"{path}: a folder of task chunks holds only *.jsonl files, not "
                f"{', '.join(others[:3])}; give a task file itself as --tasks")
        if not files:
            raise TaskSourceError(
                f"{path}: folder holds no *.jsonl task chunks; in the chart, apply the "
                "tasksFrom ConfigMaps first (kubectl apply --server-side -f NAME-tasks.yaml)")
        return files
    if not p.exists():
        raise TaskSourceError(f"{path}: no such file; give the path of your task list")
    if not p.is_file():
        raise TaskSourceError(f"{path}: not a regular file")
    return [p]


def resolve_format(path: str, fmt: str) -> str:
    """``text`` or ``jsonl``; ``auto`` picks jsonl for .jsonl/.ndjson files and folders."""
    if fmt not in FORMATS:
        raise TaskSourceError(f"unknown task format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if path != "-" and (Path(path).is_dir() or Path(path).suffix in JSONL_SUFFIXES):
        return "jsonl"
    return "text"


def iter_tasks(path: str, fmt: str = "auto") -> Iterator[str]:
    """Yield each task payload in order, raising TaskSourceError at the first bad line."""
    for block in iter_task_blocks(path, fmt):
        yield from block


def iter_task_blocks(path: str, fmt: str = "auto") -> Iterator[list[str]]:
    """The task payloads in order, a list per block of the source (about BLOCK_BYTES of it):
    a million tasks cost a few hundred steps instead of a million."""
    fmt = resolve_format(path, fmt)
    if path == "-":
        yield from _parse_blocks(sys.stdin.buffer, "<stdin>", fmt)
        return
    for file in source_files(path):
        try:
            with file.open("rb") as stream:
                yield from _parse_blocks(stream, str(file), fmt)
        except PermissionError as exc:
            raise TaskSourceError(f"{file}: permission denied; make it readable") from exc
        except IsADirectoryError as exc:
            raise TaskSourceError(f"{file}: is a folder, not a task file") from exc


def scan_tasks(path: str, fmt: str = "auto") -> TaskScan:
    """Validate every task and return the count and a fingerprint of the whole list."""
    digest = hashlib.sha256()
    count = 0
    for block in iter_task_blocks(path, fmt):
        # Each payload's length, then the payload: one update per block hashes the same bytes
        # as one per field, and map() keeps the per-task steps out of the interpreter.
        data = [payload.encode() for payload in block]
        lengths = map(_LENGTH.pack, map(len, data))
        digest.update(b"".join(chain.from_iterable(zip(lengths, data, strict=True))))
        count += len(block)
    if count == 0:
        raise no_tasks_error(path)
    return TaskScan(count, digest.hexdigest())


def no_tasks_error(path: str) -> TaskSourceError:
    """The error for a task source that holds no task at all."""
    return TaskSourceError(
        f"{path}: no tasks found (only blank lines or # comments); add one task per line"
    )


def _blocks(stream: BinaryIO) -> Iterator[bytes]:
    """``stream`` in pieces of about BLOCK_BYTES, each ending at a line break (the last one at
    the end of the stream). A line break byte never occurs inside a UTF-8 character."""
    carry = b""
    while chunk := stream.read(BLOCK_BYTES):
        chunk = carry + chunk
        cut = chunk.rfind(b"\n") + 1
        carry = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if carry:
        yield carry


def _parse_blocks(stream: BinaryIO, name: str, fmt: str) -> Iterator[list[str]]:
    """The payloads of each block of ``stream``. A block with anything to report, or a payload
    near the size limit, goes through the line-by-line parser, which names the line."""
    number = offset = 0
    for block in _blocks(stream):
        payloads = _block_payloads(block[len(codecs.BOM_UTF8):] if offset == 0 and
                                   block.startswith(codecs.BOM_UTF8) else block, fmt)
        if payloads is None:
            payloads = [payload for _start, payload in
                        _parse_at(io.BytesIO(block), name, fmt, number, offset)]
        yield payloads
        number += block.count(b"\n")
        offset += len(block)


def _block_payloads(block: bytes, fmt: str) -> list[str] | None:
    """The payloads of whole lines, or None if the line-by-line parser must look closer."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    if fmt == "text":
        payloads = [line for line in lines if (start := line.lstrip()) and start[0] != "#"]
    else:
        try:
            values = [json.loads(line) for line in lines if line.strip()]
        except ValueError:
            return None
        payloads = [value if isinstance(value, str) else _compact(value) for value in values]
    # A UTF-8 character is at most 4 bytes: shorter payloads cannot be over the limit.
    if payloads and max(map(len, payloads)) * 4 > MAX_PAYLOAD_BYTES:
        return None
    return payloads


def _parse_at(stream: BinaryIO, name: str, fmt: str, lines_before: int = 0,
              offset: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset of its line, payload) of each task of ``stream``, which starts after
    ``lines_before`` lines and ``offset`` bytes of its file."""
    for number, raw in enumerate(stream, lines_before + 1):
        start, offset = offset, offset + len(raw)
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
            start += len(codecs.BOM_UTF8)
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise TaskSourceError(
                f"{name}:{number}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as "
                "UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
        payload = _payload(line, name, number, fmt)
        if payload is None:
            continue
        # A text payload is part of its line, so only long lines pay for measuring it; JSON
        # values are re-serialised and may grow (1e5 becomes 100000.0).
        may_be_over = fmt == "jsonl" or len(raw) > MAX_PAYLOAD_BYTES
        if may_be_over and (size := len(payload.encode())) > MAX_PAYLOAD_BYTES:
            raise TaskSourceError(
                f"{name}:{number}: task is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit; "
                "put large inputs in storage and list references to them instead"
            )
        yield start, payload


def _payload(line: str, name: str, number: int, fmt: str) -> str | None:
    if not line.strip():
        return None
    if fmt == "text":
        return None if line.lstrip().startswith("#") else line
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise TaskSourceError(
            f"{name}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); each line must "
            "hold one JSON value"
        ) from None
    return value if isinstance(value, str) else _compact(value)


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class TaskIndex:
    """A task list's payloads by position (a task's id is its position), read back on demand.
    One pass records where each task's line starts: 10 bytes a task (a million tasks, 10 MB)
    instead of their text; each lookup is one seek and one line read."""

    def __init__(self, path: str, fmt: str = "auto") -> None:
        if path == "-":
            raise ConfigError("--tasks - (stdin) cannot be read twice; give the task file")
        self.fmt = resolve_format(path, fmt)
        self.files = source_files(path)
        self._file_of = array("H")
        self._offset = array("q")
        for number, file in enumerate(self.files):
            with file.open("rb") as stream:
                for offset, _payload in _parse_at(stream, str(file), self.fmt):
                    self._file_of.append(number)
                    self._offset.append(offset)
        self._streams: dict[int, BinaryIO] = {}

    def __len__(self) -> int:
        return len(self._offset)

    def payload(self, position: int) -> str | None:
        """The task at ``position`` (from 0), or None past the end."""
        if not 0 <= position < len(self._offset):
            return None
        number = self._file_of[position]
        stream = self._streams.get(number)
        if stream is None:
            stream = self._streams[number] = self.files[number].open("rb")
        stream.seek(self._offset[position])
        line = stream.readline().decode("utf-8").rstrip("\r\n")
        return _payload(line, str(self.files[number]), position + 1, self.fmt)

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()


def task_file(payloads: list[str], fmt: str) -> str:
    """A task file holding ``payloads``, which `seed` reads back as the same payloads: jsonl
    (one JSON string per line) holds any payload; text only those a text line can."""
    if fmt == "jsonl":
        return "".join(json.dumps(payload, ensure_ascii=False) + "\n" for payload in payloads)
    for number, payload in enumerate(payloads, 1):
        if "\n" in payload or "\r" in payload or not payload.strip() \
                or payload.lstrip().startswith("#"):
            raise ConfigError(f"task {number} ({payload[:40]!r}) cannot be a line of a text task "
                              "file (a line break, blank, or a leading #): use --format jsonl")
    return "".join(payload + "\n" for payload in payloads)
