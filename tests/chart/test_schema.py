"""Bad values fail at `helm template` with a schema error that names the field."""

from __future__ import annotations

import pytest

from render import template

EXTERNAL = {"enabled": True, "host": "redis.shared.svc"}
BAD_VALUES = {
    "parallelism 0": ({"worker": {"parallelism": 0}}, "worker/parallelism"),
    "unknown broker": ({"broker": {"type": "kafka"}}, "broker/type"),
    "coarse with no tasks": ({"mode": "coarse", "tasks": []}, "tasks"),
    "unknown mode": ({"mode": "medium"}, "mode"),
    "unknown worker key": ({"worker": {"paralelism": 2}}, "worker"),
    "unknown top-level key": ({"replicas": 3}, "replicas"),
    "external broker without a Secret": ({"broker": {"external": EXTERNAL}},
                                         "broker/auth/existingSecret"),
    "external broker without a host": (
        {"broker": {"external": {"enabled": True}, "auth": {"existingSecret": "s"}}},
        "broker/external/host"),
    "tasksFrom without a count": ({"tasks": [], "tasksFrom": {"configMaps": ["t-00000"]}},
                                  "tasksFrom/count"),
    # (an empty one is refused by the template, with the fix: test_user_values.py)
    "command of numbers": ({"worker": {"command": ["sleep", 5]}}, "worker/command/1"),
    "zero attempts": ({"worker": {"maxAttempts": 0}}, "worker/maxAttempts"),
    "lease as a string": ({"worker": {"leaseSeconds": "60"}}, "worker/leaseSeconds"),
    "empty task": ({"tasks": ["a", ""]}, "tasks/1"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "image/pullPolicy"),
    "bad Secret name": ({"broker": {"auth": {"existingSecret": "Bad_Name"}}},
                        "broker/auth/existingSecret"),
    "bad quantity": ({"worker": {"resources": {"limits": {"memory": "lots"}}}},
                     "worker/resources/limits/memory"),
    "timeout for a handler": ({"worker": {"handler": "m:f", "taskTimeoutSeconds": 5}},
                              "worker/taskTimeoutSeconds"),
    "negative retryDead": ({"retryDead": -1}, "retryDead"),
    "negative retry delay": ({"worker": {"retryDelaySeconds": -1}}, "worker/retryDelaySeconds"),
    "zero retry delay cap": ({"worker": {"retryDelayMaxSeconds": 0}},
                             "worker/retryDelayMaxSeconds"),
    # A failed index fails an Indexed Job, and there is no queue to put dead tasks back in.
    "indexed with onDead succeed": ({"mode": "indexed", "worker": {"onDead": "succeed"}},
                                    "worker/onDead"),
    "indexed with retryDead": ({"mode": "indexed", "retryDead": 1}, "retryDead"),
}


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("case", BAD_VALUES, ids=str)
def test_bad_values_give_a_schema_error_naming_the_field(helm_name, case):
    values, field = BAD_VALUES[case]
    out = template(values, helm_name)
    assert out.returncode != 0, f"{case}: helm accepted it"
    assert "don't meet the specifications of the schema" in out.stderr, out.stderr
    # helm 4 writes the path as /a/b, helm 3 as a.b
    assert f"/{field}" in out.stderr or field.replace("/", ".") in out.stderr, out.stderr
    assert "execution error" not in out.stderr, "a template crashed before the schema spoke"
