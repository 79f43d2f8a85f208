"""The local stack's certificates: a development CA and one server certificate, made with
the ``cryptography`` package (nothing is downloaded), kept in ``<state_dir>/secrets/tls``.

- ``ca.pem``: the CA's certificate, which every client trusts (``verify-full``: the chain
  and the name); ``ca-key.pem``: its key, used only here;
- ``server.pem`` / ``server-key.pem``: the certificate every server of the stack presents
  (Kafka, Postgres, MariaDB), for ``localhost`` and ``127.0.0.1``;
- ``server.p12``: the same key and certificate as a PKCS#12 keystore for the broker's JVM
  (Kafka reads an unencrypted PEM key only as a string), locked with ``server.p12.password``.

Files are made where missing, mode 0600 in a 0700 folder, and a certificate is made again
when it expires within RENEW_BEFORE_DAYS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.core.keyfiles import write_secret

RSA_KEY_BITS: Final = 2048
CA_VALID_DAYS: Final = 3650
SERVER_VALID_DAYS: Final = 397
RENEW_BEFORE_DAYS: Final = 30
SERVER_NAMES: Final = ("localhost",)
SERVER_ADDRESSES: Final = ("127.0.0.1",)
CA_NAME: Final = "smallcups local CA"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server-key.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "server.p12"

    @property
    def keystore_password(self) -> Path:
        return self.folder / "server.p12.password"


def tls_files(secrets_folder: Path) -> TlsFiles:
    return TlsFiles(secrets_folder / "tls")


def ensure_certificates(secrets_folder: Path) -> TlsFiles:
    """The CA and the server certificate, made where missing or about to expire."""
    files = tls_files(secrets_folder)
    files.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(files.folder, 0o700)
    if not _valid(files.ca) or not files.ca_key.exists():
        ca_key = new_key()
        write_secret(files.ca_key, key_pem(ca_key), replace=True)
        write_secret(files.ca, pem(ca_certificate(ca_key)), replace=True)
        files.server_cert.unlink(missing_ok=True)
    if not _valid(files.server_cert) or not files.keystore.exists():
        _make_server(files)
    return files


def copy_for_server(files: TlsFiles, folder: Path, owner: str | None) -> TlsFiles:
    """The CA, the server certificate and its key, copied into ``folder`` (mode 0700, files
    0600) for a server that runs as the OS user ``owner`` (None: as we do). Postgres and
    MariaDB read their key as that user under root, and Postgres refuses a key that
    others may read. Copied at every start, so a renewed certificate is taken up."""
    copies = TlsFiles(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    pairs = [(files.ca, copies.ca), (files.server_cert, copies.server_cert)]
    pairs.append((files.server_key, copies.server_key))
    for source, copy in pairs:
        write_secret(copy, source.read_bytes(), replace=True)
    if owner is not None:
        account = pwd.getpwnam(owner)
        for path in (folder, *(copy for _, copy in pairs)):
            os.chown(path, account.pw_uid, account.pw_gid)
    return copies


def _make_server(files: TlsFiles) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise ValueError(f"{files.ca_key} is not an RSA key")
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    key = new_key()
    certificate = server_certificate(key, ca, ca_key)
    write_secret(files.server_key, key_pem(key), replace=True)
    write_secret(files.server_cert, pem(certificate), replace=True)
    password = secrets.token_urlsafe(24)
    write_secret(files.keystore, keystore(key, certificate, ca, password), replace=True)
    write_secret(files.keystore_password, password, replace=True)


def keystore(
    key: rsa.RSAPrivateKey, certificate: x509.Certificate, ca: x509.Certificate, password: str
) -> bytes:
    """The key, its certificate and the CA's as a PKCS#12 keystore (for a JVM)."""
    return pkcs12.serialize_key_and_certificates(
        b"smallcups",
        key,
        certificate,
        [ca],
        serialization.BestAvailableEncryption(password.encode()),
    )


def _valid(path: Path) -> bool:
    if not path.exists():
        return False
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    renew_at = certificate.not_valid_after_utc - datetime.timedelta(days=RENEW_BEFORE_DAYS)
    return datetime.datetime.now(datetime.UTC) < renew_at


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ca_certificate(key: rsa.RSAPrivateKey, common_name: str = CA_NAME) -> x509.Certificate:
    """A self-signed CA certificate of ``key``, valid CA_VALID_DAYS."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def server_certificate(
    key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    server_names: Sequence[str] = SERVER_NAMES,
    addresses: Sequence[str] = SERVER_ADDRESSES,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> x509.Certificate:
    """A certificate of ``key`` signed by the CA, for ``server_names`` (the first one is
    its subject) and ``addresses``, valid SERVER_VALID_DAYS."""
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
