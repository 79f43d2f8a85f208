"""The leak scan of `make test`: it finds each secret the stack made wherever it leaked,
and only those."""

from __future__ import annotations

from pathlib import Path

from scripts.scan_secrets import main, scan, scanned_files, stack_secrets

PASSWORD = "Zq3-secret-password-value"


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "secrets" / "credentials").mkdir(parents=True)
    (state / "secrets" / "credentials" / "kafka-worker").write_text(PASSWORD + "\n")
    (state / "secrets" / "risk-public-keys").write_text("local-1 " + "ab" * 32 + "\n")
    (state / "secrets" / "tls").mkdir()
    (state / "secrets" / "tls" / "ca.pem").write_text("-----BEGIN-----\n" + "Q" * 64 + "\n")
    (state / "logs").mkdir()
    (state / "logs" / "worker.log").write_text("claimed partition 3\n")
    (state / "kafka").mkdir()
    (state / "kafka" / "server.properties").write_text(f"password={PASSWORD}\n")
    return state


def test_secrets_are_read_from_every_secrets_folder_but_not_public_ones(tmp_path: Path) -> None:
    state = _state(tmp_path)
    (state / "chaos" / "secrets").mkdir(parents=True)
    (state / "chaos" / "secrets" / "leg-keys").write_text("local-1 " + "cd" * 32 + "\n")
    found = stack_secrets(state)
    assert sorted(found.values()) == sorted([PASSWORD.encode(), b"cd" * 32])


def test_a_clean_state_passes_and_a_leak_is_named_not_shown(tmp_path: Path, capsys: object) -> None:
    state = _state(tmp_path)
    assert main(["--state-dir", str(state)]) == 0
    output = tmp_path / "pytest-output.log"
    output.write_bytes(b"x" * 5_000_000 + PASSWORD.encode() + b"\n")
    assert main(["--state-dir", str(state), str(output)]) == 1
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert "credentials/kafka-worker" in captured.err
    assert PASSWORD not in captured.err + captured.out


def test_a_secret_split_across_two_reads_is_found(tmp_path: Path) -> None:
    state = _state(tmp_path)
    log = state / "logs" / "worker.log"
    log.write_bytes(b"y" * (4 * 1024 * 1024 - 5) + PASSWORD.encode())
    findings = scan(scanned_files(state, []), stack_secrets(state))
    assert [f.path for f in findings] == [log]
