"""What watches paperfeed: the alert rules (deploy/monitoring/alerts.yml and its
PrometheusRule in k8s/monitoring), checked and unit-tested with promtool; the Grafana
dashboard (compose's monitoring profile, a ConfigMap in k8s/monitoring); and every
metric a rule or a panel uses, read from a running service's /metrics (docs/runbook.md,
docs/deploy.md "Monitoring")."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    LiveServer,
    admin_headers,
    in_ci,
    live_server,
    make_settings,
    register,
)
from tests.personas import papers
from tests.test_deploy import kubectl

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"
K8S_MONITORING = ROOT / "k8s" / "monitoring"
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "paperfeed.json"
K8S_DASHBOARD = K8S_MONITORING / "dashboards" / "paperfeed.json"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
AFTER_A_TRAINING = {"paperfeed_model_gate_ndcg"}
"""Series that exist once a training run was judged (a service without a model lacks
them)."""

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


def render_monitoring() -> dict[str, dict[str, Any]]:
    done = run(kubectl(), "kustomize", str(K8S_MONITORING))
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr.lower(), done.stderr
    objects = [obj for obj in yaml.safe_load_all(done.stdout) if obj]
    return {obj["kind"]: obj for obj in objects}


def test_the_prometheus_rule_holds_the_same_rules(tmp_path: Path) -> None:
    objects = render_monitoring()
    assert sorted(objects) == ["ConfigMap", "PodMonitor", "PrometheusRule"]
    monitor = objects["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/name": "paperfeed-api"}
    assert monitor["podMetricsEndpoints"][0]["port"] == "http"
    rule = objects["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups == yaml.safe_load(RULES.read_text())["groups"]
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump({"groups": groups}))
    checked = run(promtool(), "check", "rules", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_the_dashboard_is_valid_and_shipped_to_kubernetes_unchanged() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "paperfeed"
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])
    assert K8S_DASHBOARD.read_text() == DASHBOARD.read_text()
    config_map = render_monitoring()["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["paperfeed.json"]) == dashboard


def test_compose_monitoring_profile_provisions_the_rules_and_the_dashboard(
    tmp_path: Path,
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE.parent / source).exists(), volume
            else:
                assert source in compose["volumes"], volume
    for name in ("api", "worker", "redis"):
        assert "profiles" not in services[name]  # `up` without the profile: as before
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "./monitoring/alerts.yml:/etc/prometheus/alerts.yml" in mounts
    # The Prometheus deployed is the one whose promtool tests the rules.
    version = run(promtool(), "--version").stdout.split()[2].split("+")[0]
    assert services["prometheus"]["image"] == f"prom/prometheus:v{version}"
    # Its configuration passes promtool, with the rules where compose mounts them.
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8000"]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = run(promtool(), "check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Grafana: the data source compose runs, the dashboards' folder where it is mounted.
    provisioning = MONITORING / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "paperfeed.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in services["grafana"]["volumes"]


def used_series(with_dashboard: bool = True) -> dict[str, list[dict[str, str]]]:
    """Every paperfeed metric a rule (and a panel) names, with each selector's equality
    matchers."""
    exprs = [rule["expr"] for rule in rules()]
    if with_dashboard:
        exprs += [target["expr"] for panel in panels() for target in panel["targets"]]
    used: dict[str, list[dict[str, str]]] = {}
    for expr in exprs:
        for name, selector in METRIC.findall(expr):
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


def missing_series(text: str, with_dashboard: bool = True) -> list[str]:
    samples = exported(text)
    missing = []
    for name, selectors in used_series(with_dashboard).items():
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
    """A service without a model yet: the rules' series are all there."""
    assert used_series(with_dashboard=False)  # the pattern found the rules' metrics
    assert missing_series(exercise(http), with_dashboard=False) == []


@pytest.mark.slow
def test_every_metric_a_rule_or_a_panel_uses_is_exported(api: LiveServer) -> None:
    """A service serving a trained model: every series of the rules and the dashboard."""
    assert used_series().keys() >= AFTER_A_TRAINING
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert missing_series(exercise(http)) == []
        # The feed cache's counters count every feed (the tests' trending snapshot lasts
        # a millisecond, so these are misses: tests/test_feed_cache.py sees hits).
        _, auth = register(http)
        before = cache_counts(http.get("/metrics").text)
        for _ in range(2):
            assert http.get("/v1/feed", headers=auth).status_code == 200
        after = cache_counts(http.get("/metrics").text)
        assert sum(after.values()) - sum(before.values()) == 2


def cache_counts(text: str) -> dict[str, float]:
    found = re.findall(r'^paperfeed_feed_cache_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


@pytest.mark.slow
def test_every_metric_is_exported_by_several_processes(tmp_path: Path) -> None:
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
                    missing = set(missing_series(text))
                    assert missing <= AFTER_A_TRAINING, missing
                    assert "paperfeed_redis_up 1.0" in text
    finally:
        assert service.stop() == 0


def test_the_feed_cache_counts_hits_and_misses(redis_url: str, r: object) -> None:
    """A reader's next feeds in the same trending snapshot are hits (a catalog larger than
    the feed: a shorter ranking is not kept for a longer feed)."""
    settings = make_settings(redis_url, trending_snapshot_s=3600)
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        imported = http.post("/v1/admin/papers", json=papers(), headers=admin_headers())
        assert imported.status_code == 200, imported.text
        _, auth = register(http)
        before = cache_counts(http.get("/metrics").text)
        for _ in range(3):
            assert http.get("/v1/feed", headers=auth).status_code == 200
        after = cache_counts(http.get("/metrics").text)
    assert (after["miss"] - before["miss"], after["hit"] - before["hit"]) == (1, 2)


def test_a_stage_the_newest_training_skipped_reads_zero_not_an_older_runs_seconds() -> None:
    """``paperfeed_model_training_seconds{stage=...}`` follows the newest decision: a
    training without judged cells has no ``learn.judged_model`` stage, and the gauge
    says 0 for it, not the seconds of the run before that had one (every process mirrors
    the same decisions, so each zeroes the same stages)."""
    from prometheus_client import REGISTRY

    from paperfeed.api.metrics import mirror_decisions

    def seconds(stage: str) -> float | None:
        return REGISTRY.get_sample_value("paperfeed_model_training_seconds", {"stage": stage})

    older = {
        "published": True,
        "stages": {"learn.judged_model": 4.5, "learn.final_model": 5.0, "learn": 12.0},
    }
    mirror_decisions([older])
    assert seconds("learn.judged_model") == 4.5
    newest = {"published": True, "stages": {"learn.final_model": 3.0, "learn": 6.0}}
    mirror_decisions([newest, older])
    assert seconds("learn.judged_model") == 0.0
    assert seconds("learn.final_model") == 3.0
