"""Task lists: text and JSON Lines, every bad-input case with its one-line message."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workqueue import taskfile
from workqueue.defaults import MAX_PAYLOAD_BYTES
from workqueue.errors import TaskSourceError
from workqueue.taskfile import iter_tasks, scan_tasks


def write(tmp_path, data: bytes, name: str = "tasks.txt") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_text_skips_blanks_and_comments_and_keeps_leading_spaces(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa\r\n\r\n# note\n  b  \n   # indented note\nc")
    assert list(iter_tasks(path)) == ["a", "  b  ", "c"]


def test_jsonl_strings_pass_as_is_and_other_values_as_compact_json(tmp_path):
    path = write(tmp_path, b'"x y"\n\n{"a": [1, 2]}\n7\nnull\n', "t.jsonl")
    assert list(iter_tasks(path)) == ["x y", '{"a":[1,2]}', "7", "null"]


def test_folder_of_chunks_is_read_in_name_order(tmp_path):
    (tmp_path / "00001.jsonl").write_text('"b"\n')
    (tmp_path / "00000.jsonl").write_text('"a"\n')
    # A mounted ConfigMap's own bookkeeping, which is not a task chunk
    (tmp_path / "..data").mkdir()
    assert list(iter_tasks(str(tmp_path))) == ["a", "b"]


def test_folder_with_other_files_is_refused_not_half_read(tmp_path):
    (tmp_path / "00000.jsonl").write_text('"a"\n')
    (tmp_path / "more.txt").write_text("zzz\n")
    with pytest.raises(TaskSourceError, match=r"holds only \*\.jsonl files, not more\.txt"):
        list(iter_tasks(str(tmp_path)))


def test_same_list_same_fingerprint_and_order_matters(tmp_path):
    first = scan_tasks(write(tmp_path, b"a\nb\n", "1.txt"))
    same = scan_tasks(write(tmp_path, b"a\r\n\nb\n", "2.txt"))
    swapped = scan_tasks(write(tmp_path, b"b\na\n", "3.txt"))
    assert first == same and first.count == 2
    assert swapped.fingerprint != first.fingerprint


@pytest.mark.parametrize("data, name, message", [
    (b"ok\n\xff\xfe\n", "t.txt", "t.txt:2: not UTF-8 (byte 0xff)"),
    (b"# only a comment\n\n", "t.txt", "no tasks found"),
    (b'"a"\n{bad\n', "t.jsonl", "t.jsonl:2: not valid JSON"),
    (b"x" * (MAX_PAYLOAD_BYTES + 1) + b"\n", "t.txt", "t.txt:1: task is"),
    # Under the limit as written, over it once re-serialised (each 1e5 becomes 100000.0)
    (b"[" + b"1e5," * (MAX_PAYLOAD_BYTES // 4 - 10) + b"1]\n", "t.jsonl", "t.jsonl:1: task is"),
])
def test_bad_input_names_the_line_and_the_fix(tmp_path, data, name, message):
    with pytest.raises(TaskSourceError) as err:
        scan_tasks(write(tmp_path, data, name))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(TaskSourceError, match="no such file"):
        scan_tasks(str(tmp_path / "nope.txt"))


@given(st.lists(st.text(min_size=1).filter(lambda s: "\n" not in s and "\r" not in s
                                           and s.strip() and not s.lstrip().startswith("#")
                                           and s != "\ufeff" and not s.startswith("\ufeff")),
                min_size=1, max_size=20))
def test_text_round_trip_keeps_every_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("rt") / "t.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert list(iter_tasks(str(path))) == lines


def _line_by_line(path: str, fmt: str) -> list[str] | str:
    """The reference: every line through the careful parser, or its error."""
    try:
        with open(path, "rb") as stream:
            return [payload for _start, payload in taskfile._parse_at(stream, path, fmt)]
    except TaskSourceError as exc:
        return str(exc)


def _in_blocks(path: str, fmt: str) -> list[str] | str:
    try:
        return list(iter_tasks(path, fmt))
    except TaskSourceError as exc:
        return str(exc)


LINE_PIECES = st.sampled_from([
    b"a", b"  b ", b"#c", b"  # d", b"", b" ", b"\r", b"\xef\xbb\xbf", b"\xff", b"\xc3\xa9",
    b'"s"', b'{"k": [1, 2]}', b"7", b"1e5", b"{bad", b"\xe2\x80\xa8", b"\x85", b"\t",
])


@given(lines=st.lists(st.lists(LINE_PIECES, max_size=4).map(b"".join), max_size=12),
       start=st.sampled_from([b"", b"\xef\xbb\xbf"]), end=st.sampled_from([b"", b"\n", b"\r\n"]),
       block=st.integers(1, 9),
       fmt=st.sampled_from(["text", "jsonl"]))
def test_blocks_read_what_the_line_by_line_parser_reads(tmp_path_factory, lines, start, end,
                                                        block, fmt):
    """Blocks of any size, cut anywhere, give the same payloads as parsing line by line, and
    the same one-line error naming the same line."""
    path = tmp_path_factory.mktemp("blocks") / "t"
    path.write_bytes(start + b"\n".join(lines) + end)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(taskfile, "BLOCK_BYTES", block)
        assert _in_blocks(str(path), fmt) == _line_by_line(str(path), fmt)


def test_a_payload_near_the_limit_is_measured_in_a_block_of_short_ones(tmp_path):
    """Short tasks take the fast path; a long one among them is still measured in bytes."""
    over = "é" * (MAX_PAYLOAD_BYTES // 2 + 1)  # under the limit in characters, over in bytes
    path = write(tmp_path, ("a\n" * 100 + over + "\n").encode())
    with pytest.raises(TaskSourceError, match=r"tasks.txt:101: task is \d+ bytes"):
        list(iter_tasks(path))


def test_fingerprint_is_each_payloads_length_then_its_bytes(tmp_path):
    """A seeder resumed by a newer version compares this fingerprint with the one stored by
    the older: its definition must not change with how it is computed."""
    expected = hashlib.sha256()
    for payload in ["a", "é z", "a"]:
        data = payload.encode()
        expected.update(len(data).to_bytes(8, "big") + data)
    assert scan_tasks(write(tmp_path, "a\né z\na\n".encode())).fingerprint == expected.hexdigest()
