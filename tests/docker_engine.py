"""A Docker engine for the tests: found, or started here (dockerd as root), or a reason why not."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 60.0
BASE_IMAGE = "workqueue-test-base:bookworm"
"""Debian bookworm with python3, built by debootstrap: no registry can be reached from here."""


@contextlib.contextmanager
def docker_lock() -> Iterator[None]:
    """One test process at a time starts dockerd or builds an image: make test runs several,
    and two image builds in one checkout delete each other's dist/wheels."""
    with open(Path(tempfile.gettempdir()) / "workqueue-docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def docker(*args: str, check: bool = True, timeout: float = 600,
           **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    return result


def _engine_up() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=30).returncode == 0


def ensure_engine() -> str | None:
    """None when an engine answers (starting dockerd if it can); else why it cannot."""
    if _engine_up():
        return None
    dockerd = shutil.which("dockerd", path=os.environ["PATH"] + ":/usr/sbin:/usr/bin")
    if shutil.which("docker") is None or dockerd is None:
        return "docker or dockerd is not installed (Debian: apt-get install docker.io)"
    if os.geteuid() != 0:
        return "the Docker engine is not running and starting dockerd needs root"
    log = Path(tempfile.gettempdir()) / "workqueue-dockerd.log"
    with log.open("ab") as out:
        subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _engine_up():
            return None
        time.sleep(1)
    tail = log.read_text(errors="replace")[-400:].strip().replace("\n", " | ")
    return f"dockerd did not start within {START_TIMEOUT:.0f} s ({log}: {tail})"


def ensure_base_image() -> str:
    """The debootstrap-built base image, built once per Docker engine."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    debootstrap = shutil.which("debootstrap", path=os.environ["PATH"] + ":/usr/sbin")
    if debootstrap is None:
        raise AssertionError("debootstrap is not installed; run `make setup`")
    with tempfile.TemporaryDirectory(prefix="wq-rootfs-") as rootfs:
        result = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv", "bookworm",
             rootfs, debian_mirror()], capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{result.stdout[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", BASE_IMAGE, stdin=tar.stdout)
        tar.wait()
    return BASE_IMAGE


def debian_mirror() -> str:
    """The Debian archive apt on this machine uses (scripts/debian-mirror.sh)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([str(root / "scripts" / "debian-mirror.sh")], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(result.stderr.strip())
    return result.stdout.strip()
