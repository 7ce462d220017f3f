"""The chart README's table of values, generated from values.yaml's `# --` comments (the
helm-docs convention: `# -- text` starts a value's description, plain `# ` lines go on with it,
`# @default -- text` stands in for a default too long to show, `## ` lines are notes only).

    python scripts/values_table.py            # rewrite the table in the chart's README.md
    python scripts/values_table.py --check    # exit 1 with one line if it is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generated import write_or_check

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: |$)")


@dataclass
class Row:
    path: str
    description: str
    default: str | None
    """The `@default --` text, or None to show the value itself."""


def rows(values_text: str) -> list[Row]:
    """Every documented value, in the file's order."""
    found: list[Row] = []
    parents: list[tuple[int, str]] = []
    description: list[str] | None = None
    default: str | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            description, default = [stripped[5:]], None
        elif stripped.startswith("# @default -- ") and description is not None:
            default = stripped[len("# @default -- "):]
        elif stripped.startswith("# ") and not stripped.startswith("## ") and description:
            description.append(stripped[2:])
        elif match := KEY.match(line):
            indent = len(match["indent"])
            parents = [(i, k) for i, k in parents if i < indent]
            parents.append((indent, match["key"]))
            if description is not None:
                found.append(Row(".".join(k for _, k in parents), " ".join(description),
                                 default))
            description, default = None, None
        elif not stripped.startswith(("#", "- ")):
            # A blank line or a value's own lines (not a list item) end a description.
            description = None
    return found


def _value_at(values: dict[str, Any], path: str) -> Any:
    value: Any = values
    for key in path.split("."):
        value = value[key]
    return value


def _type_of(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"),
                       (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str) -> str:
    """The Markdown table: key, type, default and description of every documented value."""
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for row in rows(values_text):
        value = _value_at(values, row.path)
        shown = row.default if row.default is not None else (
            "`" + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "`")
        lines.append(f"| `{row.path}` | {_type_of(value)} | {_cell(shown)} | "
                     f"{_cell(row.description)} |")
    return "\n".join(lines)


def with_table(readme: str, values_text: str) -> str:
    """``readme`` with the text between its markers replaced by the table."""
    before, marker, rest = readme.partition(START)
    _, end_marker, after = rest.partition(END)
    if not marker or not end_marker:
        raise ValueError(f"the README has no {START} ... {END} markers")
    return f"{before}{START}\n{table(values_text)}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is stale")
    parser.add_argument("--chart", type=Path, default=ROOT / "charts" / "workqueue-job")
    args = parser.parse_args(argv)
    readme_file = args.chart / "README.md"
    readme = readme_file.read_text()
    values_text = (args.chart / "values.yaml").read_text()
    try:
        wanted = with_table(readme, values_text)
    except ValueError as exc:
        print(f"values-table: error: {readme_file}: {exc}", file=sys.stderr)
        return 1
    return write_or_check(
        readme_file, readme, wanted, args.check, "values-table",
        stale=f"{readme_file}'s table of values differs from values.yaml; run make readme",
        written=f"{readme_file} lists {len(rows(values_text))} values")


if __name__ == "__main__":
    sys.exit(main())
