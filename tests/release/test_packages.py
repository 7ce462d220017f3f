"""What a release ships, as a user meets it: `make package` in dist/, the chart published to a
real OCI registry (Debian's docker-registry) and installed from it with helm 4 and helm 3, and
the wheel installed in a fresh venv, outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from docker_engine import docker_lock
from readme import quick_start
from registry import Registry
from render import HELMS, helm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workqueue-job"
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
TASKS = ["plain", "with space", "quote's \"double\"", "ünïcødé ✓", "  leading", "a,b;c|d"]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    # Image builds write setuptools' scratch files in the checkout too: one at a time.
    with docker_lock():
        package = make("package", f"DIST={folder}")
    assert package.returncode == 0, package.stdout + package.stderr
    return folder


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = Registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published(dist, registry) -> str:
    """The chart pushed to the registry by `make publish`; its oci:// reference."""
    publish = registry.publish(dist, "IMAGE=0")
    assert publish.returncode == 0, publish.stdout + publish.stderr
    assert f"helm install myjob oci://{registry.host}/wq/charts/workqueue-job --version " \
           f"{VERSION} --plain-http" in publish.stdout
    return f"oci://{registry.host}/wq/charts/workqueue-job"


def helm_at_home(helm_name: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm with its cache and config in ``home``: nothing of the user's is read or written."""
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    return subprocess.run([str(HELMS[helm_name]), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def without_password(manifest: str) -> str:
    """A render with the Secret's generated password blanked (a new one at each render)."""
    return re.sub(r"(?m)^(  password: ).+$", r"\1GENERATED", manifest)


def test_make_package_writes_the_chart_the_wheel_and_the_sdist(dist):
    names = sorted(path.name for path in dist.iterdir() if path.suffix != ".log")
    assert names == [f"workqueue-job-{VERSION}.tgz", f"workqueue_job-{VERSION}-py3-none-any.whl",
                     f"workqueue_job-{VERSION}.tar.gz"]
    with tarfile.open(dist / f"workqueue-job-{VERSION}.tgz") as chart:
        packed = set(chart.getnames())
    assert {"workqueue-job/README.md", "workqueue-job/values.schema.json",
            "workqueue-job/icon.svg"} <= packed
    assert not any("/ci/" in name for name in packed), "ci/ values stay out (.helmignore)"


@pytest.mark.parametrize("helm_name", HELMS)
def test_the_packaged_chart_passes_strict_lint(dist, helm_name):
    lint = helm(helm_name, "lint", "--strict", str(dist / f"workqueue-job-{VERSION}.tgz"))
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("helm_name", HELMS)
def test_the_chart_from_the_registry_renders_as_the_checkout(published, registry, helm_name,
                                                             tmp_path):
    # Given the chart in the registry, tagged with its version
    assert registry.tags("wq/charts/workqueue-job") == [VERSION]
    # When a user renders it from there, Then it is the checkout's render
    remote = helm_at_home(helm_name, tmp_path, "template", "demo", published, "--version",
                          VERSION, "--plain-http", "--namespace", "jobs")
    local = helm(helm_name, "template", "demo", str(CHART), "--namespace", "jobs")
    assert remote.returncode == 0, remote.stderr
    assert without_password(remote.stdout) == without_password(local.stdout)
    # And `helm pull` gets the very package make package wrote
    pulled = helm_at_home(helm_name, tmp_path, "pull", published, "--version", VERSION,
                          "--plain-http", "--destination", str(tmp_path))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / f"workqueue-job-{VERSION}.tgz").is_file()


@pytest.mark.parametrize("helm_name", HELMS)
def test_helm_show_gives_the_metadata_and_the_readme(published, helm_name, tmp_path):
    shown = helm_at_home(helm_name, tmp_path, "show", "chart", published, "--version", VERSION,
                         "--plain-http")
    assert shown.returncode == 0, shown.stderr
    meta = yaml.safe_load(shown.stdout)
    assert (meta["version"], meta["appVersion"]) == (VERSION, VERSION)
    assert meta["home"] and meta["sources"] and meta["maintainers"] and meta["icon"]
    assert "artifacthub.io/changes" in meta["annotations"]
    readme = helm_at_home(helm_name, tmp_path, "show", "readme", published, "--version",
                          VERSION, "--plain-http")
    assert readme.stdout.strip() == (CHART / "README.md").read_text().strip()


def test_publish_without_a_registry_or_an_image_is_one_line(dist):
    nowhere = make("publish", f"DIST={dist}")
    assert nowhere.returncode != 0
    assert "publish: error: give the registry: make publish REGISTRY=" in nowhere.stderr
    no_image = make("publish", "REGISTRY=127.0.0.1:9/wq", f"DIST={dist}",
                    "LOCAL_IMAGE=workqueue-job:no-such-tag")
    assert no_image.returncode != 0
    assert ("publish: error: image workqueue-job:no-such-tag is not built; run make images "
            "first, or IMAGE=0 to push the chart only") in no_image.stderr


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel and its generator extra, as `pip install` gives a user."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    wheel = dist / f"workqueue_job-{VERSION}-py3-none-any.whl"
    install = subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet",
                              "--disable-pip-version-check", f"{wheel}[generator]"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return folder


def test_the_wheel_runs_and_generates_outside_the_checkout(venv, tmp_path):
    # Given a folder far from the checkout, with a task list of awkward tasks
    (tmp_path / "tasks.txt").write_text("\n".join(TASKS) + "\n", encoding="utf-8")
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120,
           "env": {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}}
    # Then the CLI says its version, and the generator runs as a script and as a module
    version = subprocess.run([str(venv / "bin" / "workqueue"), "--version"], **run)
    assert version.stdout.strip() == f"workqueue {VERSION}", version.stderr
    assert subprocess.run([str(venv / "bin" / "workqueue"), "--help"], **run).returncode == 0
    script = subprocess.run([str(venv / "bin" / "workqueue-generator"), "tasks.txt",
                             "-o", "values.yaml"], **run)
    assert script.returncode == 0, script.stderr
    assert f"oci://REGISTRY/charts/workqueue-job --version {VERSION}" in script.stderr
    module = subprocess.run([str(venv / "bin" / "python"), "-m", "generator", "tasks.txt",
                             "-o", "module.yaml"], **run)
    assert module.returncode == 0, module.stderr
    # And its values are byte for byte the checkout's
    checkout = subprocess.run([sys.executable, "-m", "generator", "tasks.txt",
                               "-o", "checkout.yaml"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    assert checkout.returncode == 0, checkout.stderr
    wanted = (tmp_path / "checkout.yaml").read_bytes()
    assert (tmp_path / "values.yaml").read_bytes() == wanted
    assert (tmp_path / "module.yaml").read_bytes() == wanted
    assert yaml.safe_load(wanted)["tasks"] == TASKS


def test_the_readme_quick_start_from_a_registry_runs_verbatim(published, registry, venv,
                                                              tmp_path):
    # Given the README's commands, with REGISTRY where make publish put the chart; the wheel
    # stands in for `pip install` (the package is on no index here)
    commands = quick_start("pip install")
    script = "\n".join(["set -e", f"cd {tmp_path}", *commands[1:]])
    script = script.replace("REGISTRY", f"{registry.host}/wq").replace(
        "helm install myjob", "helm install --dry-run=client --plain-http myjob")
    # When they run in a fresh shell with only the venv and helm on PATH
    env = {"PATH": f"{venv / 'bin'}:{HELMS['helm4'].parent}:/usr/bin:/bin",
           "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                         env=env)
    # Then the release renders from the registry with the user's tasks and image
    assert out.returncode == 0, out.stdout + out.stderr
    assert "STATUS: pending-install" in out.stdout
    assert f"{registry.host}/wq/workqueue-job:{VERSION}" in out.stdout
    assert "3 tasks, fine mode" in out.stdout
