"""scripts/debian-mirror.sh: the Debian archive is read from apt's sources, never written in."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "debian-mirror.sh"
ARCHIVE = "debian"
"""The archive's path on a mirror; the hosts below are made up (example.)."""


def mirror(apt: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={"APT_ETC": str(apt), "PATH": "/usr/bin:/bin"})


def test_the_main_archive_of_a_deb822_file_not_its_security_one(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: http://security.example/{ARCHIVE}-security\n"
        "Suites: trixie-security\nComponents: main\n\n"
        f"Types: deb\n# a comment\nURIs: http://mirror.example/{ARCHIVE}/\n"
        "Suites: trixie trixie-updates\nComponents: main\n")
    result = mirror(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"http://mirror.example/{ARCHIVE}"


def test_the_one_line_format(tmp_path):
    (tmp_path / "sources.list").write_text(
        f"deb [signed-by=/k.gpg] http://old.example/{ARCHIVE} bookworm main\n"
        f"deb http://old.example/{ARCHIVE}-security bookworm-security main\n")
    assert mirror(tmp_path).stdout.strip() == f"http://old.example/{ARCHIVE}"


def test_no_archive_is_one_line_saying_so(tmp_path):
    result = mirror(tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"debian-mirror: apt names no Debian archive in "
                                     f"{tmp_path}/sources.list(.d); add one")
