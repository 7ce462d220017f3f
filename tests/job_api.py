"""The API server's rules for a Job's spec that a JSON schema cannot say, as
kubernetes/kubernetes pkg/apis/batch/validation/validation.go has them (validateJobSpec,
validatePodFailurePolicy*, validateSuccessPolicyRule, validatePodReplacementPolicy, ValidateJob).
kubernetes-validate checks the shapes; these check what the API server would refuse on top."""

from __future__ import annotations

import re

MAX_PARALLELISM_FOR_INDEXED_JOB = 100_000
COMPLETIONS_SOFT_LIMIT = 100_000
MAX_POD_FAILURE_POLICY_RULES = 20
MAX_EXIT_CODE_VALUES = 255
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _indexes(text: str, completions: int) -> set[int] | None:
    """validateIndexesFormat: "1,3-5" within [0, completions), intervals in order."""
    found: set[int] = set()
    last = -1
    for part in text.split(","):
        first, _, end = part.partition("-")
        if not first.isdigit() or (end and not end.isdigit()):
            return None
        low, high = int(first), int(end or first)
        if low <= last or high < low or high >= completions:
            return None
        found |= set(range(low, high + 1))
        last = high
    return found


def job_spec_violations(job: dict) -> list[str]:
    """Why the API server would refuse to create ``job`` (empty: it accepts it)."""
    spec = job["spec"]
    pod = spec["template"]["spec"]
    out: list[str] = []
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    if indexed:
        if completions is None:
            out.append("completions is required when completion mode is Indexed")
        elif completions > 0:
            hostname = f"{job['metadata']['name']}-{completions - 1}"
            if len(hostname) > 63 or not DNS_LABEL.match(hostname):
                out.append(f"metadata.name: will not able to create pod with invalid DNS "
                           f"label: {hostname}")
        if spec.get("parallelism", 1) > MAX_PARALLELISM_FOR_INDEXED_JOB:
            out.append("parallelism must be less than or equal to 100000 when Indexed")
        if (completions or 0) > COMPLETIONS_SOFT_LIMIT and "backoffLimitPerIndex" in spec \
                and "maxFailedIndexes" not in spec:
            out.append("maxFailedIndexes must be specified when completions is above 100000")
    elif "backoffLimitPerIndex" in spec or "successPolicy" in spec:
        out.append("backoffLimitPerIndex and successPolicy require indexed completion mode")
    policy = spec.get("podFailurePolicy")
    if policy is not None:
        if pod.get("restartPolicy") != "Never":
            out.append("only Never is supported as restartPolicy with a podFailurePolicy")
        if spec.get("podReplacementPolicy", "Failed") != "Failed":
            out.append("podReplacementPolicy must be Failed with a podFailurePolicy")
        out += _pod_failure_policy_violations(policy, spec, pod)
    for rule in (spec.get("successPolicy") or {}).get("rules", []):
        text = rule.get("succeededIndexes")
        count = rule.get("succeededCount")
        if text is None and count is None:
            out.append("a successPolicy rule needs succeededCount or succeededIndexes")
        chosen = _indexes(text, completions or 0) if text is not None else None
        if text is not None and chosen is None:
            out.append(f"error parsing succeededIndexes {text!r}")
        if count is not None and (count > (completions or 0)
                                  or (chosen is not None and count > len(chosen))):
            out.append(f"succeededCount {count} is more than the indexes it counts")
    return out


def _pod_failure_policy_violations(policy: dict, spec: dict, pod: dict) -> list[str]:
    names = {c["name"] for c in [*pod.get("containers", []), *pod.get("initContainers", [])]}
    out = []
    if len(policy["rules"]) > MAX_POD_FAILURE_POLICY_RULES:
        out.append("more than 20 podFailurePolicy rules")
    for rule in policy["rules"]:
        action = rule.get("action")
        if action == "FailIndex" and "backoffLimitPerIndex" not in spec:
            out.append("FailIndex requires the backoffLimitPerIndex to be set")
        elif action not in ("FailJob", "Ignore", "Count", "FailIndex"):
            out.append(f"action {action!r} is not supported")
        exits, conditions = rule.get("onExitCodes"), rule.get("onPodConditions")
        if (exits is None) == (not conditions):
            out.append("exactly one of onExitCodes and onPodConditions is required")
        for condition in conditions or []:
            if condition.get("status") not in ("True", "False", "Unknown"):
                out.append(f"onPodConditions status {condition.get('status')!r}")
        if exits is not None:
            values = exits.get("values", [])
            if exits.get("containerName") not in (None, *names):
                out.append(f"containerName {exits['containerName']!r} is not in the template")
            if exits.get("operator") not in ("In", "NotIn"):
                out.append(f"operator {exits.get('operator')!r}")
            if not values or len(values) > MAX_EXIT_CODE_VALUES:
                out.append("onExitCodes needs 1 to 255 values")
            if exits.get("operator") == "In" and 0 in values:
                out.append("exit code 0 must not be used with the In operator")
            if values != sorted(set(values)):
                out.append("onExitCodes values must be ordered and unique")
    return out
