"""Generator output -> helm template -> the files the seeder reads hold exactly the input tasks."""

from __future__ import annotations

import base64
import gzip
import json
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator import Options, generate
from render import by_kind_name, lay_out_tasks, render_chart
from workqueue.taskfile import iter_tasks

RELEASE_LIMIT = 1024 * 1024  # Helm's release Secret and any Kubernetes object
YAML_SPECIAL = ["yes", "No", "null", "~", "- x", "{a: b}", "  leading", "#hash", "key: v", "'",
                '"', "\\", "1e3", "0o17", "on", "\u2028", "\x85", "\t", "😀", "&a", "*a", "!t"]


def seeder_source(objects: list[dict], extra: list[dict], folder: Path) -> list[str]:
    """The tasks as the seeder reads them from its /tasks volume."""
    lay_out_tasks(objects, extra, folder, "demo-workqueue-job-seeder")
    return list(iter_tasks(str(folder)))


def round_trip(tmp_path: Path, tasks: list[str], helm_name: str = "helm4",
               **options) -> tuple[list[str], list[dict]]:
    source = tmp_path / "tasks.jsonl"
    source.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    result = generate(Options(str(source), name="demo", output=tmp_path / "values.yaml",
                              **options))
    values = tmp_path / "values.yaml"
    values.write_text(result.values, encoding="utf-8")
    objects = render_chart(helm_name=helm_name, files=[values])
    extra = (list(yaml.load_all(result.manifest.read_text(), Loader=yaml.CSafeLoader))
             if result.manifest else [])
    folder = tmp_path / "seeder-tasks"
    folder.mkdir()
    return seeder_source(objects, extra, folder), objects


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("chunked", [False, True], ids=["inline", "configmaps"])
def test_tasks_reach_the_seeder_in_order(tmp_path, helm_name, chunked):
    tasks = [*YAML_SPECIAL, *(f"frame-{i:04d}" for i in range(300)), "frame-0001"]
    options = {"inline_max_bytes": 500} if chunked else {}
    seen, objects = round_trip(tmp_path, tasks, helm_name, mode="coarse", **options)
    assert seen == tasks
    job = by_kind_name(objects)[("Job", "demo-workqueue-job-worker")]
    assert job["spec"]["completions"] == len(tasks)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(YAML_SPECIAL), st.text(min_size=1)),
                min_size=1, max_size=20),
       st.booleans())
def test_any_task_text_survives(tmp_path_factory, tasks, chunked):
    tmp_path = tmp_path_factory.mktemp("trip")
    options = {"inline_max_bytes": 50} if chunked else {}
    seen, _ = round_trip(tmp_path, tasks, **options)
    assert seen == tasks


def test_largest_inline_list_fits_a_helm_release(tmp_path):
    # Random text barely compresses: the worst case for the gzipped release Secret.
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_./"
    tasks, size = [], 0
    while size < 250 * 1024:
        task = "".join(rng.choice(alphabet) for _ in range(60))
        tasks.append(task)
        size += len(task) + 8
    source = tmp_path / "tasks.txt"
    source.write_text("\n".join(tasks) + "\n")
    result = generate(Options(str(source), name="demo"))
    assert not result.config_maps, "expected the list to stay inline"
    values = tmp_path / "values.yaml"
    values.write_text(result.values)
    manifest = yaml.safe_dump_all(render_chart(files=[values]))
    # Helm stores {chart, values, manifest} as gzipped, base64-encoded JSON in one Secret.
    release = json.dumps({"config": yaml.safe_load(result.values), "manifest": manifest})
    stored = base64.b64encode(base64.b64encode(gzip.compress(release.encode())))
    assert len(stored) < RELEASE_LIMIT


@pytest.mark.slow
def test_a_million_tasks(tmp_path):
    source = tmp_path / "tasks.txt"
    with source.open("w") as out:
        for i in range(1_000_000):
            out.write(f"s3://bucket/frames/{i:07d}.exr\n")
    result = generate(Options(str(source), name="demo", output=tmp_path / "values.yaml"))
    assert result.count == 1_000_000 and len(result.values.encode()) < RELEASE_LIMIT
    values = tmp_path / "values.yaml"
    values.write_text(result.values)
    maps = list(yaml.load_all(result.manifest.read_text(), Loader=yaml.CSafeLoader))
    for config_map in maps:
        assert len(json.dumps(config_map).encode()) < RELEASE_LIMIT
    objects = render_chart(files=[values])
    for obj in objects:
        assert len(json.dumps(obj).encode()) < RELEASE_LIMIT
    folder = tmp_path / "seeder"
    folder.mkdir()
    expected = (f"s3://bucket/frames/{i:07d}.exr" for i in range(1_000_000))
    seen = seeder_source(objects, maps, folder)
    assert len(seen) == 1_000_000 and all(a == b for a, b in zip(seen, expected, strict=True))
