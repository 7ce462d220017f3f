"""One way for the release scripts to keep a generated part of a file: write it, or, with
--check, say in one line that it is stale and which make target brings it up to date."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, current: str, wanted: str, check: bool, prog: str,
                   stale: str, written: str) -> int:
    """0 when ``path`` holds ``wanted`` (or now does); 1 with ``stale`` on stderr when
    ``check`` finds it does not."""
    if wanted == current:
        return 0
    if check:
        print(f"{prog}: error: {stale}", file=sys.stderr)
        return 1
    path.write_text(wanted)
    print(f"{prog}: {written}")
    return 0
