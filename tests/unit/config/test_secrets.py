"""Secrets from files and the environment, masked wherever text is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.config import ConfigError, parse_topology, secrets

TOPOLOGY = """
name: t
kafka:
  bootstrap_servers: localhost:9092
  options: {security.protocol: SASL_SSL, sasl.username: bob, sasl.password_file: %(kafka)s}
mongo:
  uri: mongodb://alice:${PW}@db:27017/?tls=true
  password_file: %(mongo)s
  options: {authSource: admin}
source: {topic: in}
"""


def test_files_and_variables_are_read_and_their_values_never_printed(tmp_path: Path) -> None:
    (tmp_path / "kafka").write_text("kafka-secret-1\n")
    (tmp_path / "mongo").write_text("mongo-secret-2")
    text = TOPOLOGY % {"kafka": tmp_path / "kafka", "mongo": tmp_path / "mongo"}
    t = parse_topology(text, env={"PW": "uri-secret-3"})
    assert t.kafka.options["sasl.password"] == "kafka-secret-1"
    assert "sasl.password_file" not in t.kafka.options
    assert t.mongo.client_args() == {"password": "mongo-secret-2", "authSource": "admin"}
    line = f"failed: {t.mongo.uri} with {t.kafka.options} and mongo-secret-2"
    scrubbed = secrets.scrub(line)
    for secret in ("kafka-secret-1", "mongo-secret-2", "uri-secret-3"):
        assert secret not in scrubbed
    assert "mongodb://alice:***@db:27017" in scrubbed


def test_any_uri_password_is_masked_even_if_never_registered() -> None:
    assert secrets.scrub("see mongodb+srv://u:p4ss@h/x") == "see mongodb+srv://u:***@h/x"


def test_a_missing_secret_file_is_a_config_error_with_its_path(tmp_path: Path) -> None:
    text = TOPOLOGY % {"kafka": tmp_path / "absent", "mongo": tmp_path / "absent"}
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, env={"PW": "x"})
    paths = {e.path for e in caught.value.errors}
    assert {"kafka.options", "mongo"} <= paths, caught.value.errors
    assert "cannot read secret file" in str(caught.value)
