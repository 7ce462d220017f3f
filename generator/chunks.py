"""Task lists too big for a Helm release become ConfigMaps of `tasks.jsonl` chunks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TextIO

from jinja2 import Environment

from .errors import GeneratorError

CHUNK_MAX_BYTES = 768 * 1024
"""Data per ConfigMap. The API server caps an object at 1 MiB; the rest is headroom for
metadata and for server-side apply's managed fields."""

CHUNK_KEY = "tasks.jsonl"


def chunk_name(release: str, index: int) -> str:
    return f"{release}-tasks-{index:05d}"


def jsonl_line(task: str) -> str:
    """One task as a pure-ASCII JSON line: safe in a YAML block scalar, decoded by the seeder."""
    return json.dumps(task, ensure_ascii=True)


def iter_chunks(tasks: Iterator[str]) -> Iterator[list[str]]:
    """JSON lines grouped so each group's text stays under CHUNK_MAX_BYTES."""
    chunk: list[str] = []
    size = 0
    for number, task in enumerate(tasks, 1):
        line = jsonl_line(task)
        cost = len(line) + 1
        if cost > CHUNK_MAX_BYTES:
            raise GeneratorError(
                f"task {number} takes {cost} bytes as JSON, over the {CHUNK_MAX_BYTES}-byte "
                "ConfigMap chunk; shorten it or store it elsewhere and list a reference"
            )
        if size + cost > CHUNK_MAX_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += cost
    if chunk:
        yield chunk


def write_chunks(env: Environment, out: TextIO, release: str, chunks: Iterator[list[str]],
                 ) -> tuple[list[str], int, str]:
    """Write one ConfigMap per chunk to ``out`` as a YAML stream; return their names in order,
    the number of tasks they hold, and a checksum of their contents (the chart's
    tasksFrom.checksum: a changed list under the same names is then a different run)."""
    template = env.get_template("tasks-configmap.yaml.j2")
    names = []
    count = 0
    digest = hashlib.sha256()
    for index, lines in enumerate(chunks):
        count += len(lines)
        for line in lines:
            digest.update(line.encode() + b"\n")
        name = chunk_name(release, index)
        out.write(template.render(name=name, release=release, key=CHUNK_KEY, index=index,
                                  count=len(lines), lines=lines))
        names.append(name)
    return names, count, digest.hexdigest()[:32]
