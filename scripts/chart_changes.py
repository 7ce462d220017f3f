"""Chart.yaml's `artifacthub.io/changes` annotation, built from CHANGELOG.md's entry for the
chart's version, so that Artifact Hub shows the same notes as the changelog.

    python scripts/chart_changes.py            # rewrite the annotation
    python scripts/chart_changes.py --check    # exit 1 with one line if it is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from generated import write_or_check

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"Breaking": "changed", "Changed": "changed", "Added": "added", "Fixed": "fixed",
         "Removed": "removed", "Deprecated": "deprecated", "Security": "security"}
"""Keep a Changelog's headings (and ours, Breaking) to Artifact Hub's kinds of change."""
ANNOTATION = "artifacthub.io/changes"


class ChangelogError(Exception):
    """The changelog or the chart cannot give the annotation; the message says why."""


def entry(changelog: str, version: str) -> list[dict[str, str]]:
    """The changes listed under ``## [version]``, in order: one per bullet, its lines joined."""
    sections = re.split(r"^## ", changelog, flags=re.MULTILINE)
    found = [s for s in sections if s.startswith(f"[{version}]")]
    if not found:
        raise ChangelogError(f"CHANGELOG.md has no entry for {version}: add a "
                             f"'## [{version}] - YYYY-MM-DD' section")
    changes: list[dict[str, str]] = []
    heading = None
    for line in found[0].splitlines()[1:]:
        if line.startswith("### "):
            heading = line[4:].strip()
            if heading not in KINDS:
                raise ChangelogError(f"CHANGELOG.md [{version}]: unknown heading {heading!r}; "
                                     f"use one of {', '.join(KINDS)}")
        elif line.startswith("- ") and heading:
            prefix = "Breaking: " if heading == "Breaking" else ""
            changes.append({"kind": KINDS[heading], "description": prefix + line[2:].strip()})
        elif line.startswith("  ") and changes:
            changes[-1]["description"] += " " + line.strip()
    if not changes:
        raise ChangelogError(f"CHANGELOG.md [{version}] lists no changes")
    return changes


def annotation_block(changes: list[dict[str, str]]) -> str:
    """The annotation as Chart.yaml holds it: a YAML list in a literal block, indented."""
    listed = yaml.safe_dump(changes, sort_keys=False, width=1000, allow_unicode=True)
    body = "".join(f"    {line}\n" for line in listed.splitlines())
    return f"  {ANNOTATION}: |\n{body}"


def with_annotation(chart_yaml: str, block: str) -> str:
    """``chart_yaml`` with its annotation replaced by ``block`` (added under `annotations:`)."""
    present = re.compile(rf"^  {re.escape(ANNOTATION)}: \|\n(?:    .*\n|\n)*", re.MULTILINE)
    if present.search(chart_yaml):
        return present.sub(lambda _m: block, chart_yaml, count=1)
    if not re.search(r"^annotations:\n", chart_yaml, flags=re.MULTILINE):
        return chart_yaml.rstrip("\n") + "\nannotations:\n" + block
    return re.sub(r"^annotations:\n", lambda m: m.group(0) + block, chart_yaml, count=1,
                  flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is stale")
    parser.add_argument("--chart", type=Path, default=ROOT / "charts" / "workqueue-job")
    parser.add_argument("--changelog", type=Path, default=ROOT / "CHANGELOG.md")
    args = parser.parse_args(argv)
    chart_file = args.chart / "Chart.yaml"
    text = chart_file.read_text()
    version = str(yaml.safe_load(text)["version"])
    try:
        block = annotation_block(entry(args.changelog.read_text(), version))
    except ChangelogError as exc:
        print(f"changes: error: {exc}", file=sys.stderr)
        return 1
    return write_or_check(
        chart_file, text, with_annotation(text, block), args.check, "changes",
        stale=f"{chart_file}'s {ANNOTATION} differs from CHANGELOG.md's [{version}] entry; "
              "run make changes",
        written=f"{chart_file} now lists CHANGELOG.md's [{version}] entry")


if __name__ == "__main__":
    sys.exit(main())
