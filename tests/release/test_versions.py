"""One version for the chart, its appVersion, the Python package and the image; a changelog
entry for it, which Chart.yaml's artifacthub.io/changes repeats; and a chart README whose table
of values is generated from values.yaml. Each check fails when the copies drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version as installed_version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workqueue-job"
META = yaml.safe_load((CHART / "Chart.yaml").read_text())
VERSION = META["version"]


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                          capture_output=True, text=True)


def test_the_chart_the_package_and_the_image_share_one_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), "SemVer"
    assert META["appVersion"] == VERSION
    assert pyproject["project"]["version"] == VERSION
    # The installed package (make setup reinstalls it when pyproject.toml changes)
    assert installed_version("workqueue-job") == VERSION
    cli = subprocess.run([sys.executable, "-m", "workqueue", "--version"], capture_output=True,
                         text=True)
    assert cli.stdout.strip() == f"workqueue {VERSION}", cli.stderr


def test_every_image_tag_the_docs_name_is_the_version():
    for path in (ROOT / "README.md", ROOT / "worker-images" / "Dockerfile",
                 CHART / "README.md"):
        tags = set(re.findall(r"workqueue-job:(\d+\.\d+\.\d+)", path.read_text()))
        assert tags <= {VERSION}, (path.name, tags)


def test_artifact_hub_lists_the_images_the_chart_runs():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    listed = {entry["name"]: entry["image"]
              for entry in yaml.safe_load(META["annotations"]["artifacthub.io/images"])}
    brokers = values["broker"]
    assert listed == {
        "workqueue-job": f"{values['image']['repository']}:{META['appVersion']}",
        "redis": "{repository}:{tag}".format(**brokers["redis"]["image"]),
        "rabbitmq": "{repository}:{tag}".format(**brokers["rabbitmq"]["image"]),
    }
    assert META["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (ROOT / "artifacthub-repo.yml").is_file()
    assert META["icon"].endswith("charts/workqueue-job/icon.svg")
    assert (CHART / "icon.svg").read_text().startswith("<svg")


def test_the_changelog_has_an_entry_for_the_version_and_an_unreleased_section():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", changelog, flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert headings[1].startswith(f"[{VERSION}] - "), headings[:2]


def test_chart_yaml_repeats_the_changelog_entry():
    check = script("chart_changes.py", "--check")
    assert check.returncode == 0, check.stderr
    changes = yaml.safe_load(META["annotations"]["artifacthub.io/changes"])
    assert {change["kind"] for change in changes} <= {"added", "changed", "deprecated",
                                                      "removed", "fixed", "security"}
    assert changes[0]["description"].startswith("Breaking: ")


def test_a_stale_changes_annotation_fails_the_check(tmp_path):
    chart = tmp_path / "chart"
    chart.mkdir()
    shutil.copy(CHART / "Chart.yaml", chart)
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text((ROOT / "CHANGELOG.md").read_text().replace(
        f"## [{VERSION}]", f"## [{VERSION}]\n\n### Fixed\n- Something new.", 1))
    stale = script("chart_changes.py", "--check", "--chart", str(chart),
                   "--changelog", str(changelog))
    assert stale.returncode == 1 and "run make changes" in stale.stderr
    # And writing it makes the check pass, listing the new change
    assert script("chart_changes.py", "--chart", str(chart),
                  "--changelog", str(changelog)).returncode == 0
    assert script("chart_changes.py", "--check", "--chart", str(chart),
                  "--changelog", str(changelog)).returncode == 0
    assert "Something new." in (chart / "Chart.yaml").read_text()


def test_a_version_without_a_changelog_entry_is_one_line(tmp_path):
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text(
        (CHART / "Chart.yaml").read_text().replace(f"version: {VERSION}", "version: 9.9.9"))
    missing = script("chart_changes.py", "--check", "--chart", str(chart))
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("changes: error: CHANGELOG.md has no entry for 9.9.9: add "
                                      "a '## [9.9.9] - YYYY-MM-DD' section")


def test_the_chart_readme_lists_every_documented_value():
    check = script("values_table.py", "--check")
    assert check.returncode == 0, check.stderr
    readme = (CHART / "README.md").read_text()
    documented = len(re.findall(r"^\s*# -- ", (CHART / "values.yaml").read_text(), re.M))
    assert readme.count("\n| `") == documented
    assert "| `worker.parallelism` | int | `2` |" in readme
    assert "charts/workqueue-job/README.md" in (ROOT / "README.md").read_text()


def test_a_changed_value_makes_the_readme_stale(tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("templates", "ci", "dashboards"))
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("  parallelism: 2\n", "  parallelism: 3\n"))
    stale = script("values_table.py", "--check", "--chart", str(chart))
    assert stale.returncode == 1 and "run make readme" in stale.stderr
    assert script("values_table.py", "--chart", str(chart)).returncode == 0
    assert "| `worker.parallelism` | int | `3` |" in (chart / "README.md").read_text()
