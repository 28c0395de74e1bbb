"""Deployment files (compose, Dockerfile, Prometheus, Grafana, Kubernetes) read statically.

No Docker engine or cluster is needed: these catch the breakage that only shows at deploy
time, such as a renamed metric on a dashboard, a mount of a moved file, a probe on the
wrong port or a command the CLI no longer accepts.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidemark.config import load_topology, parse_topology
from tidemark.config.durations import parse_duration
from tidemark.features import monitoring
from tidemark.operators import build_pipeline
from tidemark.processor.cli.main import EXIT_CONFIG, main
from tidemark.processor.observability.metrics import exposed_names

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_DIR = COMPOSE_DIR / "prometheus"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards/tidemark.json"
DATASOURCES = GRAFANA_DIR / "provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning/dashboards/tidemark.yml"
K8S = COMPOSE_DIR / "k8s"
EXAMPLE_TOPOLOGY = ROOT / "config/examples/clicks-per-user.yaml"
DEPLOY_DOC = ROOT / "docs/DEPLOY.md"

METRICS_PORT = 9464
METRIC = re.compile(r"tidemark_[a-z_]+")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
SAMPLE_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count")


# --- helpers -------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def volume_mounts(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, source, target) of each mount; kind is `bind` or `volume`."""
    mounts = []
    for entry in svc.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((entry["type"], entry.get("source", ""), entry["target"]))
            continue
        source, target = entry.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def dockerfile_words(arguments: str) -> list[str]:
    """Exec form (a JSON list) or shell form."""
    text = arguments.strip()
    words: list[str] = json.loads(text) if text.startswith("[") else shlex.split(text)
    return words


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, arguments))
    return stages


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for _, d in k8s_documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in compose/k8s, got {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def k8s_workloads() -> list[dict[str, Any]]:
    return [d for _, d in k8s_documents() if d["kind"] in ("Deployment", "Job")]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A port given by number or by the container port's name, as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"container {container['name']} has no port named {port!r}"
    return int(named[0])


def configmap_topology_text() -> str:
    text: str = k8s("ConfigMap", "tidemark-topology")["data"]["topology.yaml"]
    return text


def walk(value: Any) -> list[tuple[str, Any]]:
    """Every (key, value) pair in nested JSON."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            pairs.append((key, item))
            pairs.extend(walk(item))
    elif isinstance(value, list):
        for item in value:
            pairs.extend(walk(item))
    return pairs


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    """PromQL of every panel target and template variable."""
    queries = []
    for key, value in walk(dashboard()):
        if key in ("expr", "query", "definition") and isinstance(value, str):
            queries.append(value)
    return queries


def base_name(sample: str) -> str:
    for suffix in SAMPLE_SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def deploy_commands() -> dict[str, list[str]]:
    """Every `tidemark` command line the deployment files run, by where it is written."""
    instructions = dockerfile_instructions()
    entrypoint = dockerfile_words(next(a for i, a in reversed(instructions) if i == "ENTRYPOINT"))
    assert entrypoint == ["tidemark"], "the services below pass only arguments to the entrypoint"
    commands = {
        "Dockerfile CMD": dockerfile_words(next(a for i, a in reversed(instructions) if i == "CMD"))
    }
    for name in ("init", "worker"):
        commands[f"compose {name}"] = service(name)["command"]
    for workload in k8s_workloads():
        for container in pod_spec(workload)["containers"]:
            commands[f"k8s {workload['metadata']['name']}"] = container["args"]
    return commands


# --- docker compose ------------------------------------------------------------------------


def test_compose_file_parses() -> None:
    data = compose()
    assert isinstance(data, dict)
    assert isinstance(data["services"], dict)


def test_compose_has_every_service() -> None:
    expected = {"kafka", "mongo", "init", "worker", "prometheus", "grafana"}
    assert expected <= set(compose()["services"])


def test_worker_healthcheck_requests_healthz_on_the_metrics_port() -> None:
    test = service("worker")["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in command


def test_worker_runs_two_replicas() -> None:
    assert service("worker")["deploy"]["replicas"] == 2


def test_worker_mounts_a_topology_from_the_repository() -> None:
    mounts = {target: source for kind, source, target in volume_mounts(service("worker"))}
    assert "/topology.yaml" in mounts
    host = (COMPOSE_DIR / mounts["/topology.yaml"]).resolve()
    assert host.is_file(), f"{host} does not exist"
    load_topology(host, env={})


def test_every_bind_mounted_host_path_exists() -> None:
    for name, svc in compose()["services"].items():
        for kind, source, target in volume_mounts(svc):
            if kind == "bind":
                host = (COMPOSE_DIR / source).resolve()
                assert host.exists(), f"{name}: {source} (mounted at {target}) does not exist"
                assert ROOT in host.parents, f"{name}: {source} is outside the repository"


def test_prometheus_and_grafana_ports_are_published() -> None:
    def published(name: str) -> set[str]:
        return {str(p).rsplit(":", 1)[0].rsplit(":", 1)[-1] for p in service(name)["ports"]}

    assert "9090" in published("prometheus")
    assert "3000" in published("grafana")


def test_worker_port_is_not_published_on_the_host() -> None:
    # Replicas would all claim the same host port; Prometheus reaches them on the network.
    worker = service("worker")
    assert "ports" not in worker
    assert str(METRICS_PORT) in {str(p) for p in worker["expose"]}


def test_every_named_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in compose()["services"].items():
        for kind, source, target in volume_mounts(svc):
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} ({target}) not declared"


def test_init_runs_once_between_the_dependencies_and_the_workers() -> None:
    init, worker = service("init"), service("worker")
    assert init["command"][0] == "init"
    assert init["restart"] == "no"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert init["image"] == worker["image"]


def test_compose_sets_every_variable_the_topology_reads() -> None:
    wanted = set(VARIABLE.findall(EXAMPLE_TOPOLOGY.read_text()))
    assert wanted, "the example topology reads its endpoints from the environment"
    for name in ("init", "worker"):
        assert wanted <= set(service(name)["environment"]), name


def test_compose_stop_grace_outlasts_the_checkpoint_interval() -> None:
    topology = load_topology(EXAMPLE_TOPOLOGY, env={})
    grace = parse_duration(service("worker")["stop_grace_period"])
    assert grace > topology.checkpoint.interval


def test_prometheus_discovers_every_worker_replica() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    discovered = [sd for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    assert any(
        "worker" in sd["names"] and sd["type"] == "A" and sd["port"] == METRICS_PORT
        for sd in discovered
    )


def test_prometheus_rule_files_are_mounted() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    mounted = {target for _, _, target in volume_mounts(service("prometheus"))}
    for rule_file in config.get("rule_files", []):
        assert rule_file in mounted, f"{rule_file} is not mounted into prometheus"


def test_grafana_dashboards_provider_reads_the_mounted_directory() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    mounts = {target: source for _, source, target in volume_mounts(service("grafana"))}
    for provider in providers:
        path = provider["options"]["path"]
        assert path in mounts, f"dashboards provider reads {path}, which is not mounted"
        assert (COMPOSE_DIR / mounts[path] / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    assert mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning"


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_healthcheck_requests_healthz() -> None:
    checks = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    assert len(checks) == 1
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in checks[0]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [a.split(":")[0] for i, a in dockerfile_stages()[-1] if i == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1] not in ("root", "0")


def test_dockerfile_is_multi_stage_and_the_runtime_copies_only_from_the_builder() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    runtime_copies = [a for i, a in stages[-1] if i in ("COPY", "ADD")]
    assert runtime_copies
    assert all(a.startswith("--from=") for a in runtime_copies), runtime_copies


def test_every_dockerfile_copy_source_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    sources = []
    for instruction, arguments in dockerfile_instructions():
        if instruction not in ("COPY", "ADD"):
            continue
        words = dockerfile_words(arguments)
        if any(w.startswith("--from") for w in words):
            continue
        sources.extend(w for w in words[:-1] if not w.startswith("--"))
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        parts = Path(source).parts
        for prefix in (Path(*parts[: i + 1]).as_posix() for i in range(len(parts))):
            hit = [p for p in ignored if fnmatch.fnmatch(prefix, p.strip("/"))]
            assert not hit, f"COPY {source} is excluded by .dockerignore {hit}"


def test_dockerfile_copies_every_folder_the_package_links_to() -> None:
    # tidemark/ holds links to these; a missing one builds a package that fails at import.
    copied = {
        source.rstrip("/")
        for i, a in dockerfile_instructions()
        if i == "COPY" and not a.startswith("--")
        for source in dockerfile_words(a)[:-1]
    }
    for link in (ROOT / "tidemark").iterdir():
        if link.is_symlink():
            assert link.resolve().relative_to(ROOT).as_posix() in copied, link.name


def test_dockerfile_exposes_and_serves_the_metrics_port() -> None:
    instructions = dockerfile_instructions()
    assert str(METRICS_PORT) in [a.split("/")[0] for i, a in instructions if i == "EXPOSE"]
    cmd = dockerfile_words(next(a for i, a in reversed(instructions) if i == "CMD"))
    assert cmd[cmd.index("--metrics-port") + 1] == str(METRICS_PORT)


# --- the tidemark command lines ------------------------------------------------------------


@pytest.mark.parametrize("where", sorted(deploy_commands()))
def test_every_command_line_is_accepted_by_the_cli(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A missing topology file stops `main` right after argument parsing, so nothing runs;
    # arguments the parser rejects raise SystemExit first.
    argv = [
        str(tmp_path / "missing.yaml") if a == "/topology.yaml" else a
        for a in deploy_commands()[where]
    ]
    assert str(tmp_path / "missing.yaml") in argv, f"{where}: does not read /topology.yaml"
    try:
        code = main(argv)
    except SystemExit:
        pytest.fail(f"{where}: `tidemark {' '.join(argv)}` rejected: {capsys.readouterr().err}")
    assert code == EXIT_CONFIG
    assert "cannot read file" in capsys.readouterr().err


# --- Kubernetes ----------------------------------------------------------------------------


def test_every_k8s_manifest_parses_and_names_itself() -> None:
    docs = k8s_documents()
    assert {p.name for p, _ in docs} >= {
        "deployment.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "service.yaml",
        "replay-job.yaml",
        "init-job.yaml",
    }
    for path, doc in docs:
        assert doc.get("apiVersion"), path.name
        assert doc.get("kind"), path.name
        assert doc.get("metadata", {}).get("name"), path.name


def test_deployment_probes_use_the_port_the_service_exposes() -> None:
    deployment = k8s("Deployment")
    svc = k8s("Service")
    [container] = pod_spec(deployment)["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert (
        svc["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    [svc_port] = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
    assert svc_port["port"] == METRICS_PORT
    target = container_port(container, svc_port["targetPort"])
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    assert container_port(container, live["port"]) == target == METRICS_PORT
    assert container_port(container, ready["port"]) == target
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(target)
    args = container["args"]
    assert args[args.index("--metrics-port") + 1] == str(target)


def test_termination_grace_outlasts_the_checkpoint_interval() -> None:
    topology = parse_topology(configmap_topology_text(), "configmap.yaml", env={})
    grace = pod_spec(k8s("Deployment"))["terminationGracePeriodSeconds"]
    assert grace > topology.checkpoint.interval
    assert grace > topology.checkpoint.state_interval


def test_configmap_topology_validates(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(configmap_topology_text())
    topology = load_topology(path, env={"MONGO_URI": "mongodb://db:27017"})
    build_pipeline(topology)  # expressions are checked here, as `tidemark run` does
    assert topology.mongo.uri == "mongodb://db:27017"


def test_configmap_topology_is_the_compose_example() -> None:
    assert yaml.safe_load(configmap_topology_text()) == yaml.safe_load(
        EXAMPLE_TOPOLOGY.read_text()
    ), "compose/k8s/configmap.yaml drifted from config/examples/clicks-per-user.yaml"


def test_workloads_share_the_topology_secret_and_security_context() -> None:
    configmap = k8s("ConfigMap")["metadata"]["name"]
    secret = k8s("Secret")["metadata"]["name"]
    wanted = set(VARIABLE.findall(configmap_topology_text()))
    for workload in k8s_workloads():
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        [container] = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert "limits" in container["resources"] and "requests" in container["resources"], name
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/topology.yaml"]
        assert mount["subPath"] == "topology.yaml", name
        assert volumes[mount["name"]]["configMap"]["name"] == configmap, name
        env = {e["name"]: e for e in container["env"]}
        assert wanted <= set(env), f"{name}: sets none of {wanted - set(env)}"
        assert env["MONGO_URI"]["valueFrom"]["secretKeyRef"]["name"] == secret, name
        assert "value" not in env["MONGO_URI"], f"{name}: MONGO_URI inline, not from the Secret"


def test_replay_job_replays_one_partition_without_retries() -> None:
    job = k8s("Job", "tidemark-replay")
    assert job["spec"]["backoffLimit"] == 0
    [container] = pod_spec(job)["containers"]
    args = container["args"]
    assert args[:2] == ["replay", "/topology.yaml"]
    assert "--partition" in args
    assert any(a.startswith("--from-") for a in args)
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_init_job_runs_init() -> None:
    [container] = pod_spec(k8s("Job", "tidemark-init"))["containers"]
    assert container["args"][:2] == ["init", "/topology.yaml"]


def test_secret_example_holds_placeholders_only() -> None:
    secret = k8s("Secret")
    assert "EXAMPLE" in (K8S / "secret.example.yaml").read_text()
    for value in secret.get("stringData", {}).values():
        assert "CHANGE_ME" in value


# --- metrics, Prometheus and Grafana -------------------------------------------------------


def test_dashboard_and_prometheus_name_only_exposed_metrics() -> None:
    exposed = exposed_names()
    used = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    for path in sorted(PROMETHEUS_DIR.glob("*.yml")):
        used |= set(METRIC.findall(path.read_text()))
    assert used, "no metric names found"
    assert used <= exposed, f"not exposed by the workers: {sorted(used - exposed)}"


def test_dashboard_shows_the_operational_metrics() -> None:
    used = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    expected = {
        "tidemark_records_in_total",
        "tidemark_records_out_total",
        "tidemark_consumer_lag_records",
        "tidemark_commit_seconds_bucket",
        "tidemark_state_cache_hits_total",
        "tidemark_state_cache_misses_total",
        "tidemark_dead_letters_total",
        "tidemark_recoveries_total",
        "tidemark_recovery_seconds_bucket",
        "tidemark_fenced_total",
        "tidemark_ready",
        "tidemark_assigned_partitions",
    }
    assert expected <= used, f"no panel for {sorted(expected - used)}"


def test_every_dashboard_panel_queries_something() -> None:
    panels = dashboard()["panels"]
    assert panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_uses_the_provisioned_datasource_uid() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    refs = [v for k, v in walk(dashboard()) if k == "datasource"]
    assert refs, "the dashboard names no datasource"
    for ref in refs:
        assert isinstance(ref, dict), f"datasource by name, not uid: {ref!r}"
        assert ref["uid"] == source["uid"]
        assert ref["type"] == source["type"] == "prometheus"
    assert source["url"].split("://")[1].split(":")[0] in compose()["services"]


def test_deploy_guide_documents_exactly_the_exposed_metrics() -> None:
    assert monitoring.ENTITIES  # the feature server's gauges are registered too
    documented = {base_name(n) for n in METRIC.findall(DEPLOY_DOC.read_text())}
    exposed = {base_name(n) for n in exposed_names()}
    assert documented - exposed == set(), "docs/DEPLOY.md names metrics that do not exist"
    assert exposed - documented == set(), "docs/DEPLOY.md misses metrics"
