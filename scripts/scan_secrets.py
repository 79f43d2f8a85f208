"""No secret the stack made appears in what the stack and the tests left behind.

``make test`` runs this after the suite: it reads every password and key the local
stacks created (``<state_dir>/secrets`` of the shared stack and of the chaos stack) and
looks for each of them, byte for byte, in every other file of the state folder (the
servers' logs, the workers' logs, the demo's and the tests' outputs, the broker's
record logs: every result and dead letter published) and in the files given on the
command line (the test session's output). A hit is printed by file and secret name,
never by its value, and makes the exit status 1.

Left out on purpose: the secrets folders themselves and the few files that are secret
stores by design (the broker's ``server.properties`` holds its own password, a Java
client's ``client.properties`` its user's; both mode 0600).
The databases' own files are left out too (large, and every record they hold that
leaves them is published to Kafka, which is scanned).

    python -m scripts.scan_secrets [--state-dir .smallcups] [FILE ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SECRET_DIR: Final = "secrets"
SECRET_STORES: Final = frozenset({"server.properties", "client.properties"})
"""Credentials files by design (mode 0600): the broker's own, and a Java client's."""
DATABASE_DIRS: Final = frozenset({"postgres", "mariadb"})
SECRET_LENGTH_MIN: Final = 12
"""Shorter values are not secrets the stack made (they would match by chance)."""
CHUNK_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Finding:
    path: Path
    secret_name: str


def stack_secrets(state_dir: Path) -> dict[str, bytes]:
    """Every password and key in the stacks' ``secrets`` folders, by name: the shared
    stack's (``<state_dir>/secrets``) and its neighbours' (chaos, plaintext:
    ``<state_dir>/*/secrets``). Deeper ones are tests' own fakes."""
    found: dict[str, bytes] = {}
    for folder in sorted([state_dir / SECRET_DIR, *state_dir.glob(f"*/{SECRET_DIR}")]):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and _secret(p)):
            lines = path.read_bytes().splitlines()
            if lines and lines[0].startswith(b"-----BEGIN"):
                lines = lines[2:3]  # a PEM key: its second line is random (the first opens
                # with the same DER header in every RSA key)
            for number, line in enumerate(lines, start=1):
                for word in line.split():
                    if len(word) >= SECRET_LENGTH_MIN:
                        found[f"{path.relative_to(state_dir)}:{number}"] = word
    return found


def _secret(path: Path) -> bool:
    """Public keys and certificates are not secrets; a keystore is scanned by its
    password."""
    name = path.name
    certificate = name.endswith(".pem") and "key" not in name
    return not (certificate or "public" in name or name.endswith(".p12"))


def scanned_files(state_dir: Path, extra: Sequence[Path]) -> Iterator[Path]:
    for path in sorted(state_dir.rglob("*")):
        parts = set(path.relative_to(state_dir).parts)
        if SECRET_DIR in parts or parts & DATABASE_DIRS or path.name in SECRET_STORES:
            continue
        if path.is_file() and not path.is_symlink():
            yield path
    yield from extra


def scan(files: Iterator[Path], secrets: dict[str, bytes]) -> list[Finding]:
    """Each (file, secret) where the file holds the secret's bytes."""
    longest = max((len(s) for s in secrets.values()), default=0)
    findings = []
    for path in files:
        try:
            handle = path.open("rb")
        except OSError:
            continue  # removed since it was listed (a server rotating its logs)
        with handle:
            tail = b""
            seen: set[str] = set()
            while chunk := handle.read(CHUNK_BYTES):
                window = tail + chunk
                seen.update(n for n, s in secrets.items() if n not in seen and s in window)
                tail = window[-longest:] if longest else b""
        findings += [Finding(path, name) for name in sorted(seen)]
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path(".smallcups"))
    parser.add_argument("files", nargs="*", type=Path, help="more outputs to scan")
    args = parser.parse_args(argv)
    secrets = stack_secrets(args.state_dir)
    if not secrets:
        print(f"no secrets under {args.state_dir}: run `smallcups dev up` first", file=sys.stderr)
        return 1
    files = list(scanned_files(args.state_dir, args.files))
    findings = scan(iter(files), secrets)
    for finding in findings:
        print(f"LEAK: {finding.path} holds the secret {finding.secret_name}", file=sys.stderr)
    print(f"scanned {len(files)} files for {len(secrets)} secrets: {len(findings)} leaks")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
