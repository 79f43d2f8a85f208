"""The container image and the compose cluster, checked offline (no Docker engine, no
server): the Compose Specification's JSON schema, the cluster's own invariants, the
secrets generator and the Prometheus config of the cluster (promtool). `docker compose
config` is not among them (docs/deploy.md says why).

deploy/compose/compose-spec.schema.json is the schema compose-go embeds
(github.com/compose-spec/compose-go/v2 v2.17.0, schema/compose-spec.json), unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from engine.core.config import Config, load_config
from scripts.compose_secrets import PRIVATE, make_secrets
from tests.promtool import output, promtool

ROOT: Final = Path(__file__).parents[2]
COMPOSE_DIR: Final = ROOT / "deploy" / "compose"
COMPOSE: Final = COMPOSE_DIR / "compose.yaml"
SCHEMA: Final = COMPOSE_DIR / "compose-spec.schema.json"
KAFKA_START: Final = COMPOSE_DIR / "kafka" / "start.sh"
PROMETHEUS: Final = COMPOSE_DIR / "prometheus" / "prometheus.yml"
RULES_DIR: Final = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "smallcups.json"
DOCKERFILE: Final = ROOT / "Dockerfile"
METRICS_PORT: Final = 9464
BROKERS: Final = ("kafka-1", "kafka-2", "kafka-3")
SECRETS_MOUNT: Final = "/run/secrets/"
DEFAULTED: Final = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")
"""``${NAME:-default}``, the only interpolation the compose file uses."""


def _compose() -> dict[str, Any]:
    text = DEFAULTED.sub(lambda match: match.group(2), COMPOSE.read_text())
    assert "${" not in text.replace("$${", ""), "an interpolation without a default"
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _published_ports() -> Iterator[tuple[str, str]]:
    for name, service in _services().items():
        for port in service.get("ports", []):
            yield name, port if isinstance(port, str) else json.dumps(port)


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)

    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]

    assert schema["title"] == "Compose Specification"
    assert errors == []


def test_every_published_port_is_bound_to_loopback() -> None:
    published = list(_published_ports())

    assert published, "nothing published: Prometheus, Grafana and Kafka should be"
    for service, port in published:
        assert port.startswith("127.0.0.1:"), f"{service} publishes {port}"
        assert "network_mode" not in _services()[service]


def test_the_workers_scale_without_fixed_names_or_host_ports() -> None:
    worker = _services()["worker"]

    assert "ports" not in worker
    assert "container_name" not in worker
    assert worker["command"] == ["worker"]
    assert worker["stop_signal"] == "SIGTERM"
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert str(METRICS_PORT) in worker["expose"]
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in " ".join(worker["healthcheck"]["test"])


def test_three_brokers_replicate_three_times_with_two_in_sync() -> None:
    services, start = _services(), _properties(KAFKA_START.read_text())
    voters = start["controller.quorum.voters"].split(",")

    assert sorted(s for s in services if s.startswith("kafka")) == list(BROKERS)
    assert [services[b]["environment"]["KAFKA_NODE_ID"] for b in BROKERS] == ["1", "2", "3"]
    assert {services[b]["image"].split(":")[1][:2] for b in BROKERS} == {"4."}
    assert voters == [f"{n}@kafka-{n}:9093" for n in (1, 2, 3)]
    assert start["process.roles"] == "broker,controller"
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert start[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
        assert start[key] == "2", key
    assert start["unclean.leader.election.enable"] == "false"
    init = load_config(environ=_environment("init"))
    assert (init.kafka.replication_factor, init.kafka.min_insync_replicas) == (3, 2)


def test_every_kafka_listener_is_sasl_ssl() -> None:
    start = _properties(KAFKA_START.read_text())
    listeners = [entry.split("://")[0] for entry in start["listeners"].split(",")]
    protocols = dict(
        entry.split(":") for entry in start["listener.security.protocol.map"].split(",")
    )

    assert set(protocols) == set(listeners) == {"BROKER", "CONTROLLER", "EXTERNAL"}
    assert set(protocols.values()) == {"SASL_SSL"}
    assert start["allow.everyone.if.no.acl.found"] == "false"
    assert start["super.users"] == "User:admin"


def _properties(script: str) -> dict[str, str]:
    """The key=value lines of the broker's configuration in the start script."""
    lines = re.findall(r"^([a-z][a-z0-9.-]+)=(.*)$", script, re.MULTILINE)
    return dict(lines)


def _environment(service: str) -> dict[str, str]:
    """A service's environment, over the image's (the Dockerfile's ENV)."""
    image = dict(re.findall(r"^\s+(SMALLCUPS_[A-Z_]+)=(\S+)", DOCKERFILE.read_text(), re.M))
    return image | {key: str(value) for key, value in _services()[service]["environment"].items()}


@pytest.mark.parametrize("service", ["init", "worker"])
def test_the_smallcups_services_configure_with_mounted_secrets(service: str) -> None:
    environment = _environment(service)
    config = load_config(environ=environment)
    mounted = set(_services()[service]["secrets"])

    assert _secret_files_named(config) <= {SECRETS_MOUNT + name for name in mounted}
    assert _credentials_named(config) <= mounted
    assert config.shards.credentials_dir == SECRETS_MOUNT.rstrip("/")
    assert config.kafka.sasl_username == {"init": "admin", "worker": "worker"}[service]
    assert config.worker.metrics_host == "0.0.0.0"
    assert config.worker.metrics_port == METRICS_PORT


def _secret_files_named(config: Config) -> set[str]:
    files = {config.kafka.sasl_password_file, config.kafka.ssl_ca_file}
    files |= {config.security.leg_keys_file, config.security.risk_public_keys_file}
    return {name for name in files if name}


def _credentials_named(config: Config) -> set[str]:
    dsns = [config.shards.control_dsn, *config.shards.cup_dsns]
    return {match for dsn in dsns for match in re.findall(r"credentials=([\w.-]+)", dsn)}


def test_secrets_come_from_generated_files_never_the_environment(tmp_path: Path) -> None:
    declared = _compose()["secrets"]
    made = set(make_secrets(tmp_path))

    assert all(set(source) == {"file"} for source in declared.values())
    assert {source["file"] for source in declared.values()} == {f"./secrets/{n}" for n in declared}
    assert set(declared) <= made - PRIVATE
    assert (COMPOSE_DIR / "secrets" / ".gitignore").read_text().splitlines()[-2:] == [
        "*",
        "!.gitignore",
    ]
    for name, service in _services().items():
        assert set(service.get("secrets", [])) <= set(declared), name
        for key, value in service.get("environment", {}).items():
            secret_named = "PASSWORD" in key and not key.endswith("_FILE")
            assert not secret_named, f"{name}: {key} is a password in the environment"
            assert "password=" not in str(value).lower(), f"{name}: {key}"


def test_the_generator_makes_readable_files_once_and_a_certificate_for_every_server(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "secrets"
    made = make_secrets(folder)
    certificate = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    password = (folder / "kafka-keystore-password").read_bytes()
    servers = [
        n
        for n, s in _services().items()
        if {"server.pem", "kafka-keystore.p12"} & set(s.get("secrets", []))
    ]

    assert folder.stat().st_mode & 0o777 == 0o700
    for name in made:
        assert (folder / name).stat().st_mode & 0o777 == (0o600 if name in PRIVATE else 0o644)
    assert make_secrets(folder) == []
    assert set(servers) == {*BROKERS, "control-db", "cup-postgres", "cup-mariadb"}
    assert set(servers) <= set(names.value.get_values_for_type(x509.DNSName))
    assert pkcs12.load_pkcs12((folder / "kafka-keystore.p12").read_bytes(), password).key


def test_prometheus_loads_the_repositorys_rules_and_finds_the_workers(tmp_path: Path) -> None:
    prometheus = _services()["prometheus"]
    config = yaml.safe_load(PROMETHEUS.read_text())
    discovery = config["scrape_configs"][0]["dns_sd_configs"][0]
    local = tmp_path / "prometheus.yml"
    local.write_text(PROMETHEUS.read_text().replace("/etc/prometheus/rules/", f"{RULES_DIR}/"))
    done = promtool("check", "config", str(local))

    assert "../prometheus/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    assert (discovery["names"], discovery["port"]) == (["worker"], METRICS_PORT)
    assert config["scrape_configs"][0]["job_name"] == "smallcups"
    assert done.returncode == 0, output(done)
    assert "SUCCESS: 1 rule files found" in output(done)


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    grafana = _services()["grafana"]
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    boards = yaml.safe_load((provisioning / "dashboards" / "smallcups.yml").read_text())
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}

    assert [(s["type"], s["url"]) for s in sources["datasources"]] == [
        ("prometheus", "http://prometheus:9090")
    ]
    assert mounts["../grafana/smallcups.json"].startswith(boards["providers"][0]["options"]["path"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_every_bind_mount_is_a_file_of_the_repository() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"


def test_the_image_is_slim_non_root_and_stops_on_sigterm() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    final = text.rsplit("\nFROM ", 1)[1]
    ignored = (ROOT / ".dockerignore").read_text().split()

    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert stages == [("${PYTHON_IMAGE}", "build"), ("${PYTHON_IMAGE}", "")]
    assert "build-essential" not in final
    assert "pip uninstall -y pip setuptools wheel" in final
    assert re.search(r"^USER 10001:10001$", final, re.MULTILINE)
    assert f"EXPOSE {METRICS_PORT}" in final
    assert 'ENTRYPOINT ["smallcups"]' in final
    assert "STOPSIGNAL SIGTERM" in final
    assert {".git", ".venv", ".smallcups", "deploy/compose/secrets"} <= set(ignored)
