"""The README's shell blocks, as the tests that run them verbatim read them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start(first: str) -> list[str]:
    """The README's sh block that begins with ``first``, as commands (continuation lines
    joined)."""
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        commands = [line for line in block.replace("\\\n", "").splitlines() if line.strip()]
        if commands[0].startswith(first):
            return commands
    raise AssertionError(f"the README has no sh block that begins with {first!r}")
