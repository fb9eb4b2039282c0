"""What watches paperfeed: the alert rules (deploy/monitoring/alerts.yml and its
PrometheusRule in k8s/monitoring), checked and unit-tested with promtool, and every
metric they use read from a running service's /metrics (docs/runbook.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import in_ci, register
from tests.test_deploy import kubectl

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"
K8S_MONITORING = ROOT / "k8s" / "monitoring"
RUNBOOK = ROOT / "docs" / "runbook.md"

METRIC = re.compile(r"\b(paperfeed_[a-z0-9_]+)(\{[^}]*\})?")
EQUALS = re.compile(r'(\w+)="([^"]*)"')


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if in_ci():
            pytest.fail("promtool is missing (scripts/test-setup.sh installs prometheus)")
        pytest.skip("promtool is not installed")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = run(promtool(), "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert fired == alerts
    assert quiet == alerts


def test_every_alert_has_a_severity_and_a_runbook_url() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("docs/runbook.md#"), rule["alert"]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_every_runbook_url_and_runbook_link_is_a_section_of_the_runbook() -> None:
    text = RUNBOOK.read_text()
    sections = anchors(text)
    for rule in rules():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in sections, (rule["alert"], anchor)
        assert f"### {rule['alert']}" in text or rule["alert"].endswith("Critical")
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in sections, anchor
    for operation in (
        "scale-the-api",
        "rotate-the-admin-token",
        "restore-redis-from-its-aofrdb",
        "roll-back-a-model",
        "re-run-a-failed-sync",
    ):
        assert operation in sections


def test_the_prometheus_rule_holds_the_same_rules(tmp_path: Path) -> None:
    done = run(kubectl(), "kustomize", str(K8S_MONITORING))
    assert done.returncode == 0, done.stderr
    objects = [obj for obj in yaml.safe_load_all(done.stdout) if obj]
    assert [(o["apiVersion"], o["kind"]) for o in objects] == [
        ("monitoring.coreos.com/v1", "PrometheusRule")
    ]
    groups = objects[0]["spec"]["groups"]
    assert groups == yaml.safe_load(RULES.read_text())["groups"]
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump({"groups": groups}))
    checked = run(promtool(), "check", "rules", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def used_series() -> dict[str, list[dict[str, str]]]:
    """Every paperfeed metric a rule names, with each selector's equality matchers."""
    used: dict[str, list[dict[str, str]]] = {}
    for rule in rules():
        for name, selector in METRIC.findall(rule["expr"]):
            used.setdefault(name, []).append(dict(EQUALS.findall(selector or "")))
    return used


def exported(text: str) -> list[tuple[str, dict[str, str]]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        labels = dict(EQUALS.findall(rest.rpartition("}")[0])) if rest else {}
        samples.append((name.split(" ")[0], labels))
    return samples


def missing_series(text: str) -> list[str]:
    samples = exported(text)
    missing = []
    for name, selectors in used_series().items():
        for wanted in selectors:
            if not any(
                sample == name and all(labels.get(k) == v for k, v in wanted.items())
                for sample, labels in samples
            ):
                missing.append(f"{name}{wanted or ''}")
    return missing


def exercise(http: httpx.Client) -> str:
    """A feed and a batch of events (the latency rules' series), then a scrape."""
    _, auth = register(http)
    assert http.get("/v1/feed", headers=auth).status_code == 200
    assert http.post("/v1/events", json={"events": []}, headers=auth).status_code in {200, 400}
    return http.get("/metrics").text


def test_every_metric_a_rule_uses_is_exported(http: httpx.Client) -> None:
    assert used_series()  # the pattern found the rules' metrics
    assert missing_series(exercise(http)) == []


def test_every_metric_a_rule_uses_is_exported_by_several_processes(tmp_path: Path) -> None:
    """`paperfeed serve` with two processes (Prometheus multiprocess mode): the same
    series, whichever process answers the scrape."""
    from tests.test_embedded import Service

    service = Service(tmp_path / "var")
    service.env["PAPERFEED_WORKERS"] = "2"
    service.start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            exercise(http)
            for _ in range(4):  # new connections: the kernel spreads them over both
                with httpx.Client(base_url=service.url, timeout=30) as fresh:
                    text = fresh.get("/metrics").text
                    assert missing_series(text) == []
                    assert "paperfeed_redis_up 1.0" in text
    finally:
        assert service.stop() == 0
