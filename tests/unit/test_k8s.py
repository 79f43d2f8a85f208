"""deploy/k8s offline: every overlay renders (kustomize build), every rendered object is
valid against the schemas in deploy/k8s/schemas (kubeconform, strict), and what is
generated matches its one source of truth (the ACLs of engine/kafka/acls.py, the rules
promtool tests, the Grafana dashboard, the configuration's defaults).

Both tools are the ones scripts/install_k8s_tools.sh installs (kubectl is not used); the
rendered YAML is read with PyYAML."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from engine.core.config import KafkaConfig, WorkerConfig
from engine.kafka.acls import deployment_grants
from scripts import k8s_manifests
from scripts.k8s_schemas import KUBERNETES_VERSION

ROOT: Final = Path(__file__).resolve().parents[2]
K8S: Final = ROOT / "deploy" / "k8s"
SCHEMAS: Final = K8S / "schemas"
OVERLAYS: Final = ("dev", "prod")
INSTALL: Final = "bash scripts/install_k8s_tools.sh"
TOOL_TIMEOUT_SECONDS: Final = 120.0
CONFIG_DOC: Final = ROOT / "docs" / "configuration.md"
Obj = dict[str, Any]


def tool(name: str) -> str:
    """A binary that scripts/install_k8s_tools.sh installs (kustomize, kubeconform)."""
    default = Path.home() / ".cache" / "smallcups" / "bin"
    found = Path(os.environ.get("SMALLCUPS_TOOLS_BIN", default)) / name
    if not found.is_file():
        pytest.fail(f"{name} is missing ({found}): run '{INSTALL}' (make test does)")
    return str(found)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """kubeconform in strict mode, schemas from the repository only (never the web)."""
    crds = SCHEMAS / "crds" / "{{.ResourceKind}}-{{.Group}}-{{.ResourceAPIVersion}}.json"
    return subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-kubernetes-version",
            KUBERNETES_VERSION.removeprefix("v"),
            "-schema-location",
            str(SCHEMAS),
            "-schema-location",
            str(crds),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )


@functools.cache
def rendered_text(overlay: str) -> str:
    done = subprocess.run(
        [tool("kustomize"), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"kustomize build overlays/{overlay}: {done.stderr}"
    return done.stdout


def parse_objects(yaml_text: str) -> list[Obj]:
    """Every object of (multi-document) YAML text, in order; empty documents dropped."""
    objects = [o for o in yaml.safe_load_all(yaml_text) if o is not None]
    assert all(isinstance(o, dict) and "kind" in o for o in objects), "not a Kubernetes object"
    return objects


@functools.cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(parse_objects(rendered_text(overlay)))


def only(objects: tuple[Obj, ...], kind: str, name: str | None = None) -> list[Obj]:
    found = [o for o in objects if o["kind"] == kind]
    if name is not None:
        found = [o for o in found if o["metadata"]["name"] == name]
    assert found, f"no {kind} {name or ''}"
    return found


def worker_container(objects: tuple[Obj, ...]) -> Obj:
    (deployment,) = only(objects, "Deployment", "smallcups-worker")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_in_strict_mode(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    done = validate(manifest)
    count = len(rendered(overlay))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{count} resources found in 1 file - Valid: {count}, Invalid: 0" in done.stdout
    assert "Skipped: 0" in done.stdout, done.stdout


def test_the_validation_refuses_unknown_fields(tmp_path: Path) -> None:
    """Strictness is real: an unknown field in a built-in and in a custom kind fails."""
    text = rendered_text("prod")
    for field in ("terminationGracePeriodSeconds", "minReplicaCount", "topicName"):
        assert f"  {field}:" in text, field
        broken = tmp_path / f"{field}.yaml"
        broken.write_text(text.replace(f"  {field}:", f"  {field}Typo:", 1))
        done = validate(broken)
        assert done.returncode != 0, field
        assert "Invalid: 1" in done.stdout, done.stdout


def test_generated_manifests_are_current() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in k8s_manifests.generated().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"stale: {stale}; run python -m scripts.k8s_manifests --write"


def test_prometheus_rule_holds_the_rules_byte_for_byte() -> None:
    generated = (k8s_manifests.BASE / "prometheus-rule.yaml").read_text()
    spec = generated[generated.index("\nspec:\n") + len("\nspec:\n") :]
    dedented = "".join(line.removeprefix(k8s_manifests.INDENT) for line in spec.splitlines(True))
    assert dedented == k8s_manifests.rules_groups_text(k8s_manifests.RULES.read_text())
    (from_file,) = parse_objects(generated)
    for overlay in OVERLAYS:
        (rule,) = only(rendered(overlay), "PrometheusRule")
        assert rule["spec"] == from_file["spec"], overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_config_map_holds_the_dashboard_verbatim(overlay: str) -> None:
    (config_map,) = only(rendered(overlay), "ConfigMap", "smallcups-grafana-dashboard")
    assert config_map["data"]["smallcups.json"] == k8s_manifests.DASHBOARD.read_text()
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_users_have_exactly_the_roles_acls(overlay: str) -> None:
    pattern = {"literal": "LITERAL", "prefix": "PREFIXED"}
    users = {u["metadata"]["name"]: u for u in only(rendered(overlay), "KafkaUser")}
    granted = set()
    for name, user in users.items():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512", name
        if name in (k8s_manifests.SUPER_USER, k8s_manifests.LAG_READER):
            continue
        for acl in user["spec"]["authorization"]["acls"]:
            for operation in acl["operations"]:
                resource = acl["resource"]
                granted.add(
                    (
                        name,
                        resource["type"].upper(),
                        resource["name"],
                        pattern[resource["patternType"]],
                        operation.upper(),
                    )
                )
    expected = {
        (g.user, g.resource.name, g.name, g.pattern.name, g.operation.name)
        for g in deployment_grants(KafkaConfig())
    }
    assert granted == expected
    lag_acls = users[k8s_manifests.LAG_READER]["spec"]["authorization"]["acls"]
    assert {op for acl in lag_acls for op in acl["operations"]} == {"Describe"}
    assert "authorization" not in users[k8s_manifests.SUPER_USER]["spec"]
    (kafka,) = only(rendered(overlay), "Kafka")
    assert kafka["spec"]["kafka"]["authorization"]["superUsers"] == [k8s_manifests.SUPER_USER]


@pytest.mark.parametrize(("overlay", "replicas", "in_sync"), [("dev", 1, 1), ("prod", 3, 2)])
def test_kafka_replication(overlay: str, replicas: int, in_sync: int) -> None:
    kafka = KafkaConfig()
    objects = rendered(overlay)
    (pool,) = only(objects, "KafkaNodePool")
    assert pool["spec"]["replicas"] == replicas
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    topics = {t["spec"]["topicName"]: t["spec"] for t in only(objects, "KafkaTopic")}
    expected = {kafka.commands_topic, kafka.internal_topic, kafka.results_topic, kafka.dlq_topic}
    assert set(topics) == expected
    for spec in topics.values():
        assert spec["partitions"] == kafka.partitions
        assert spec["replicas"] == replicas
        assert spec["config"]["min.insync.replicas"] == in_sync
    (cluster,) = only(objects, "Kafka")
    assert cluster["spec"]["kafka"]["config"]["min.insync.replicas"] == in_sync


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_database_cluster_is_reached_by_the_workers(overlay: str) -> None:
    objects = rendered(overlay)
    clusters = {c["metadata"]["name"]: c["spec"] for c in only(objects, "Cluster")}
    assert "smallcups-control" in clusters
    env = {e["name"]: e for e in worker_container(objects)["env"]}
    (policy,) = only(objects, "NetworkPolicy", "smallcups-worker")
    reached = {
        value
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        for expression in peer.get("podSelector", {}).get("matchExpressions", [])
        for value in expression["values"]
    }
    assert reached == set(clusters)
    (deployment,) = only(objects, "Deployment", "smallcups-worker")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    cas = {source["secret"]["name"] for source in volumes["db-ca"]["projected"]["sources"]}
    assert cas == {f"{name}-ca" for name in clusters}
    for name, spec in clusters.items():
        credentials = "SMALLCUPS_CREDENTIALS_" + name.removeprefix("smallcups-").upper()
        assert env[credentials.replace("-", "_")]["valueFrom"]["secretKeyRef"] == {
            "name": f"{name}-app",
            "key": "password",
        }
        if overlay == "prod":
            assert spec["instances"] == 3
            synchronous = spec["postgresql"]["synchronous"]
            assert synchronous["number"] >= 1
            assert synchronous["dataDurability"] == "required"
        else:
            assert spec["instances"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_drain_and_secrets(overlay: str) -> None:
    objects = rendered(overlay)
    (deployment,) = only(objects, "Deployment", "smallcups-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(objects)
    assert container["image"].startswith("smallcups:")
    assert container["args"] == ["worker"]
    env = {e["name"]: e for e in container["env"]}
    (port,) = container["ports"]
    assert env["SMALLCUPS_WORKER_METRICS_PORT"]["value"] == str(port["containerPort"])
    assert env["SMALLCUPS_WORKER_METRICS_HOST"]["value"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    pre_stop_seconds = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_seconds = WorkerConfig().handover_flush_seconds + pre_stop_seconds
    assert pod["terminationGracePeriodSeconds"] >= 2 * drain_seconds
    for name, variable in env.items():
        if re.search("PASSWORD(?!_FILE)|CREDENTIALS", name):
            assert "value" not in variable, f"{name}: a secret by value"
    (pdb,) = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    (monitor,) = only(objects, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == port["name"]


def test_worker_environment_names_real_settings() -> None:
    documented = set(re.findall(r"`(SMALLCUPS_[A-Z0-9_]+)`", CONFIG_DOC.read_text()))
    for overlay in OVERLAYS:
        for name in (e["name"] for e in worker_container(rendered(overlay))["env"]):
            if not name.startswith("SMALLCUPS_CREDENTIALS_"):
                assert name in documented, f"{overlay}: {name} is no setting"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_workers_on_their_groups_lag(overlay: str) -> None:
    kafka = KafkaConfig()
    objects = rendered(overlay)
    (scaled,) = only(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "smallcups-worker"
    assert scaled["spec"]["maxReplicaCount"] <= kafka.partitions
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {kafka.group_id}
    assert {t["metadata"]["topic"] for t in triggers} == {
        kafka.commands_topic,
        kafka.internal_topic,
    }
    (auth,) = only(objects, "TriggerAuthentication")
    assert {t["authenticationRef"]["name"] for t in triggers} == {auth["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_labelled_part_of_smallcups(overlay: str) -> None:
    for obj in rendered(overlay):
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "smallcups"
