"""Kafka's security settings without a broker: what every client is given, the ACLs per
role, the broker's listeners, the stack's certificates and secrets."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from deploy.local.kafka_broker import render_server_properties
from deploy.local.roles import Role, ensure_stack_secrets, stack_kafka
from deploy.local.tls import ensure_certificates
from engine.core.config import KafkaConfig, KafkaSecurityProtocol, StackConfig
from engine.core.errors import ConfigError
from engine.core.secrets import credentials_env_name, named_credentials, secret_from
from engine.kafka.acls import Operation, Pattern, Resource, deployment_grants, superseded_grants
from engine.kafka.connection import connection


def _secure(tmp_path: Path, **changes: object) -> KafkaConfig:
    password = tmp_path / "password"
    password.write_text("s3cret-value\n")
    settings: dict[str, object] = {
        "bootstrap_servers": "127.0.0.1:1",
        "sasl_username": "worker",
        "sasl_password_file": str(password),
        **changes,
    }
    return KafkaConfig(**settings)  # type: ignore[arg-type]


def test_sasl_ssl_is_the_default_and_every_client_gets_tls_and_the_user(tmp_path: Path) -> None:
    options = connection(_secure(tmp_path))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "worker",
        "s3cret-value",
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED


def test_plaintext_has_neither_tls_nor_a_user(tmp_path: Path) -> None:
    options = connection(_secure(tmp_path, security_protocol=KafkaSecurityProtocol.PLAINTEXT))
    assert options["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in options and "sasl_plain_password" not in options


def test_the_password_may_come_from_a_named_environment_variable(tmp_path: Path) -> None:
    kafka = _secure(tmp_path, sasl_password_file="", sasl_password_env="KAFKA_PW")
    assert connection(kafka, {"KAFKA_PW": "from-env"})["sasl_plain_password"] == "from-env"
    with pytest.raises(ConfigError, match=r"\$?KAFKA_PW is not set"):
        connection(kafka, {})


def test_a_missing_user_or_password_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sasl_username is not set"):
        connection(_secure(tmp_path, sasl_username=""))
    with pytest.raises(ConfigError, match=r"\*_file"):
        connection(_secure(tmp_path, sasl_password_file=""), {})


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="set together"):
        KafkaConfig(ssl_cert_file="client.pem")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=60))
def test_no_error_about_a_secret_shows_it(secret: str) -> None:
    for bad in (f"{secret}\n{secret}", secret * 400):
        with pytest.raises(ConfigError) as raised:
            secret_from("", "PW", "the password", {"PW": bad})
        assert secret not in str(raised.value)


def test_named_credentials_come_from_the_environment_before_the_folder(tmp_path: Path) -> None:
    (tmp_path / "cup-a").write_text("from-file\n")
    assert named_credentials("cup-a", str(tmp_path), {}) == "from-file"
    env = {credentials_env_name("cup-a"): "from-env"}
    assert credentials_env_name("cup-a") == "SMALLCUPS_CREDENTIALS_CUP_A"
    assert named_credentials("cup-a", str(tmp_path), env) == "from-env"
    with pytest.raises(ConfigError, match="cup-b"):
        named_credentials("cup-b", str(tmp_path), {})
    with pytest.raises(ConfigError, match=r"must be 1\.\.64"):
        named_credentials("../etc/passwd", str(tmp_path), {})


def test_each_role_gets_only_its_rights() -> None:
    kafka = KafkaConfig(topic_prefix="bank", group_id="bank-workers")
    rights = {
        (g.user, g.resource, g.name, g.pattern, g.operation) for g in deployment_grants(kafka)
    }
    topic, group = Resource.TOPIC, Resource.GROUP
    literal, read, write = Pattern.LITERAL, Operation.READ, Operation.WRITE
    assert {r[1:] for r in rights if r[0] == "upstream"} == {
        (topic, "bank.commands", literal, write),
        (topic, "bank.results", literal, read),
        (group, "bank.upstream", Pattern.PREFIXED, read),
    }
    assert {r[1:] for r in rights if r[0] == "risk"} == {
        (topic, "bank.internal", literal, write),
        (topic, "bank.results", literal, read),
    }
    worker = {r[1:] for r in rights if r[0] == "worker"}
    assert {
        (topic, "bank.internal", literal, read),
        (topic, "bank.internal", literal, write),
    } <= worker
    assert (group, "bank-workers", literal, read) in worker
    assert (topic, "bank.results", literal, write) in worker
    assert (topic, "bank.dlq", literal, write) in worker
    assert {r[0] for r in rights} == {"worker", "upstream", "risk"}, "admin is a super user"


def test_the_secure_broker_has_no_plaintext_listener(tmp_path: Path) -> None:
    stack = StackConfig(
        state_dir=str(tmp_path), kafka_proxied_port=29100, kafka_proxied_advertised_port=29101
    )
    ensure_stack_secrets(stack)
    settings = dict(
        line.split("=", 1)
        for line in render_server_properties(stack, tmp_path / "data").splitlines()
        if "=" in line and not line.startswith("#")
    )
    protocols = settings["listener.security.protocol.map"].split(",")
    assert protocols == ["BROKER:SASL_SSL", "CONTROLLER:SASL_SSL", "PROXIED:SASL_SSL"]
    assert settings["super.users"] == "User:admin"
    assert settings["authorizer.class.name"].endswith("StandardAuthorizer")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert (tmp_path / "secrets" / "tls" / "server.p12").stat().st_mode & 0o077 == 0


def test_a_plaintext_stack_is_a_choice(tmp_path: Path) -> None:
    stack = StackConfig(state_dir=str(tmp_path), security=False)
    text = render_server_properties(stack, tmp_path / "data")
    assert "SASL" not in text and "authorizer" not in text
    assert stack_kafka(stack, Role.WORKER).security_protocol is KafkaSecurityProtocol.PLAINTEXT


def test_each_role_is_its_own_user(tmp_path: Path) -> None:
    stack = StackConfig(state_dir=str(tmp_path))
    ensure_stack_secrets(stack)
    users = {stack_kafka(stack, role).sasl_username for role in Role}
    assert users == {"admin", "worker", "upstream", "risk"}
    files = {stack_kafka(stack, role).sasl_password_file for role in Role}
    assert len(files) == 4
    assert all(Path(f).stat().st_mode & 0o077 == 0 for f in files)


def test_the_server_certificate_chains_to_the_ca_for_localhost(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert server.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    made = files.server_cert.read_bytes()
    assert ensure_certificates(tmp_path).server_cert.read_bytes() == made, "kept while valid"
    assert all(p.stat().st_mode & 0o077 == 0 for p in files.folder.iterdir())


def test_init_takes_back_the_risk_users_old_write_unless_another_role_needs_it() -> None:
    kafka = KafkaConfig(
        topic_prefix="bank", acl_risk_users=["risk", "both"], acl_upstream_users=["app", "both"]
    )
    assert [(g.user, g.name, g.operation) for g in superseded_grants(kafka)] == [
        ("risk", "bank.commands", Operation.WRITE)
    ]
