"""The runtime image, built from the shipped Dockerfile, seeds and drains real queues.

No registry is reachable here, so the base image is Debian bookworm from debootstrap (through
the Dockerfile's BASE_IMAGE build arg); the project's wheels come from the host.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import VERSIONS, unique_queue
from docker_engine import docker, docker_lock, ensure_base_image, ensure_engine
from registry import Registry
from render import helm

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TAG = f"workqueue-job:smoke-{secrets.token_hex(3)}"
UID = "10001"
TASKS = [f"frame-{i:03d}" for i in range(40)] + ["frame-000", "with space", "quote'\""]


@pytest.fixture(scope="module")
def image():
    with docker_lock():
        reason = ensure_engine()
        if reason:
            pytest.skip(f"Docker engine unavailable: {reason}")
        base = ensure_base_image()
        build = subprocess.run([str(ROOT / "scripts" / "build-image.sh"), TAG,
                                "--build-arg", f"BASE_IMAGE={base}"],
                               capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stdout + build.stderr
    yield TAG
    docker("image", "rm", "--force", TAG, check=False)


def run_in_image(image: str, tmp: Path, url: str, *args: str, detach: bool = False,
                 worker: int = 0) -> subprocess.CompletedProcess[str] | subprocess.Popen:
    """The image as the chart runs it: read-only root, fixed UID, a tmpfs /tmp, and the
    password in a mounted file. --network host reaches the test brokers on 127.0.0.1."""
    argv = ["docker", "run", "--rm", "--network", "host", "--read-only", "--user", f"{UID}:{UID}",
            "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{tmp}/secret:/var/run/secrets/workqueue:ro",
            "-v", f"{tmp}/tasks:/tasks:ro", "-v", f"{tmp}/results:/results",
            "-e", f"WORKQUEUE_BROKER_URL={url}",
            "-e", "WORKQUEUE_BROKER_PASSWORD_FILE=/var/run/secrets/workqueue/password",
            "-e", f"WORKQUEUE_QUEUE={tmp.name}", "-e", f"WORKER={worker}", image, *args]
    if detach:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_image_runs_as_its_fixed_non_root_uid(image):
    assert docker("run", "--rm", image, "id", "-u").stdout.strip() == UID
    config = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
    assert config == f"{UID}:{UID}"


@pytest.mark.parametrize("broker_version", VERSIONS)
def test_seed_then_two_workers_drain_the_queue(image, broker_version, server_for,
                                               tmp_path_factory):
    url, password = server_for(broker_version.split("-")[0])
    tmp = tmp_path_factory.mktemp(unique_queue())
    for sub in ("secret", "tasks", "results"):
        (tmp / sub).mkdir()
    (tmp / "secret" / "password").write_text(password + "\n")
    (tmp / "tasks" / "tasks.txt").write_text("\n".join(TASKS) + "\n")
    (tmp / "results").chmod(0o777)
    (tmp / "secret").chmod(0o755)
    (tmp / "secret" / "password").chmod(0o644)

    seed = run_in_image(image, tmp, url, "workqueue", "seed", "--tasks", "/tasks/tasks.txt")
    assert seed.returncode == 0, seed.stdout + seed.stderr
    # Each worker appends "<item id> <payload>" to a file of its own (host network: one hostname).
    command = ('printf "%s %s\\n" "$WORKQUEUE_ITEM_ID" "$WORKQUEUE_PAYLOAD" '
               '>> "/results/worker-$WORKER"; sleep 0.2')
    workers = [run_in_image(image, tmp, url, "workqueue", "work", "--batch-size", "2", "--",
                            "sh", "-c", command, detach=True, worker=n) for n in (1, 2)]
    logs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(logs)

    lines = [line for f in (tmp / "results").iterdir() for line in f.read_text().splitlines()]
    done = dict(line.split(" ", 1) for line in lines)
    assert len(lines) == len(TASKS), "a task ran twice or not at all"
    assert [done[f"{i:08d}"] for i in range(len(TASKS))] == TASKS
    assert len(list((tmp / "results").iterdir())) == 2, "both workers should have taken tasks"

    status = run_in_image(image, tmp, url, "workqueue", "status", "--require-drained")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"all {len(TASKS)} tasks done" in status.stdout


def test_a_base_image_that_cannot_be_had_is_one_line_naming_base_image():
    with docker_lock():
        reason = ensure_engine()
        if reason:
            pytest.skip(f"Docker engine unavailable: {reason}")
        build = subprocess.run([str(ROOT / "scripts" / "build-image.sh"), TAG + "-nobase"],
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "BASE_IMAGE": "no-such-base-image:0"})
    assert build.returncode == 1
    assert build.stderr.strip().splitlines()[-1].startswith(
        "images: error: cannot get the base image no-such-base-image:0")
    assert "make images BASE_IMAGE=" in build.stderr
    assert "Warning" not in build.stdout + build.stderr


def test_make_publish_pushes_the_image_beside_the_chart(image, tmp_path):
    # Given a packaged chart and a real registry on loopback
    version = yaml.safe_load((ROOT / "charts" / "workqueue-job" / "Chart.yaml").read_text())[
        "version"]
    packaged = helm("helm4", "package", str(ROOT / "charts" / "workqueue-job"),
                    "--destination", str(tmp_path))
    assert packaged.returncode == 0, packaged.stderr
    registry = Registry(tmp_path)
    try:
        # When make publish pushes both (Docker takes a loopback registry over plain HTTP)
        publish = registry.publish(tmp_path, f"LOCAL_IMAGE={image}")
        assert publish.returncode == 0, publish.stdout + publish.stderr
        # Then the registry holds the image and the chart, each at the version
        assert registry.tags("wq/workqueue-job") == [version]
        assert registry.tags("wq/charts/workqueue-job") == [version]
    finally:
        registry.stop()
        docker("image", "rm", f"{registry.host}/wq/workqueue-job:{version}", check=False)
