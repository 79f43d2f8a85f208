"""Who may say what: the workers' MAC on saga legs, the risk authority's signature on
privileged commands.

Pure (no I/O): keys are data, read by engine.core.keyfiles. Both proofs cover the message's
canonical bytes (its msgpack encoding with the proof field empty and the key id set) and
the deployment (the command topic's name), so a proof made for one deployment is worth
nothing in another. A leg's MAC also covers the partition it is addressed to, so a real
leg copied to another partition is refused there.

- Legs: keyed BLAKE2b, a MAC as fast as a hash. Every worker holds the same keys; the
  first one signs and all of them verify, so keys rotate without downtime: add the new
  key everywhere, make it the first everywhere, drop the old one once no leg signed with
  it is left to consume (docs/security.md).
- Privileged commands: Ed25519. Workers hold only public keys, so neither a worker nor
  its stolen configuration can grant credit or unfreeze an account.

A replayed record with a valid proof changes nothing: its id was applied before.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.core.errors import ConfigError
from engine.core.messages import (
    KEY_ID_LENGTH_MAX,
    CreditLeg,
    Leg,
    Privileged,
    Reason,
    SettleLeg,
    encode,
)

LEG_SECRET_BYTES: Final = 32
MAC_BYTES: Final = 16
KEY_ID: Final = re.compile(rf"[A-Za-z0-9_.\-]{{1,{KEY_ID_LENGTH_MAX}}}")
_LEG_PERSON: Final = b"smallcups-leg-1"
_RISK_DOMAIN: Final = b"smallcups/risk/1\x00"


@dataclass(frozen=True, slots=True)
class LegKeys:
    """The workers' shared secrets by key id; ``signing`` names the one that signs."""

    signing: str
    secrets: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.signing not in self.secrets:
            raise ConfigError(f"leg signing key {self.signing!r} is not among the leg keys")
        for key_id, secret in self.secrets.items():
            if not KEY_ID.fullmatch(key_id):
                raise ConfigError(f"leg key id {key_id[:40]!r} is not 1..32 of [A-Za-z0-9_.-]")
            if len(secret) != LEG_SECRET_BYTES:
                raise ConfigError(f"leg key {key_id!r} must be {LEG_SECRET_BYTES} bytes")


class Authority:
    """Signs and checks legs, checks privileged commands, for one deployment."""

    def __init__(
        self,
        deployment: str,
        legs: LegKeys,
        risk: Mapping[str, Ed25519PublicKey],
    ):
        if not deployment:
            raise ConfigError("an authority belongs to one deployment (its command topic)")
        self.deployment = deployment.encode()
        self._legs = legs
        self._risk = dict(risk)

    def sign_leg(self, leg: Leg, partition: int) -> Leg:
        """``leg`` with the MAC of the signing key, for the input ``partition`` it goes to."""
        key_id = self._legs.signing
        unsigned = msgspec.structs.replace(leg, key_id=key_id, mac=b"")
        mac = self._leg_mac(self._legs.secrets[key_id], unsigned, partition)
        return msgspec.structs.replace(unsigned, mac=mac)

    def leg_problem(self, leg: Leg, partition: int) -> str:
        """Why ``leg``, read from ``partition``, did not come from a worker ("" if it did)."""
        if not leg.mac:
            return f"{_kind(leg)} without a MAC"
        secret = self._legs.secrets.get(leg.key_id)
        if secret is None:
            return f"{_kind(leg)} signed with unknown key {leg.key_id[:KEY_ID_LENGTH_MAX]!r}"
        expected = self._leg_mac(secret, msgspec.structs.replace(leg, mac=b""), partition)
        if not hmac.compare_digest(expected, leg.mac):
            return f"{_kind(leg)} with a wrong MAC for partition {partition}"
        return ""

    def privileged_problem(self, command: Privileged) -> tuple[Reason, str]:
        """(Reason.NONE, "") when the risk authority signed ``command``."""
        if not command.signature:
            return Reason.NOT_SIGNED, f"{_kind(command)} needs the risk authority's signature"
        key = self._risk.get(command.key_id)
        if key is None:
            detail = f"unknown risk key {command.key_id[:KEY_ID_LENGTH_MAX]!r}"
            return Reason.BAD_SIGNATURE, detail
        try:
            key.verify(command.signature, privileged_message(command, self.deployment))
        except InvalidSignature:
            return Reason.BAD_SIGNATURE, f"the signature of key {command.key_id!r} does not match"
        return Reason.NONE, ""

    def _leg_mac(self, secret: bytes, unsigned: Leg, partition: int) -> bytes:
        data = self.deployment + b"\x00" + partition.to_bytes(4, "big") + encode(unsigned)
        return hashlib.blake2b(data, key=secret, digest_size=MAC_BYTES, person=_LEG_PERSON).digest()


def privileged_message(command: Privileged, deployment: bytes) -> bytes:
    """The bytes the risk authority signs: the command without its signature."""
    unsigned = msgspec.structs.replace(command, signature=b"")
    return _RISK_DOMAIN + deployment + b"\x00" + encode(unsigned)


@dataclass(frozen=True, slots=True)
class RiskSigner:
    """The risk authority's private key ``key_id``, signing for one deployment."""

    deployment: str
    key_id: str
    key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID.fullmatch(self.key_id):
            raise ConfigError(f"risk key id {self.key_id[:40]!r} is not 1..32 of [A-Za-z0-9_.-]")

    def sign(self, command: Privileged) -> Privileged:
        """The command signed, stamped with the time now if it names no issue time (the
        signature covers it)."""
        unsigned = msgspec.structs.replace(
            command,
            key_id=self.key_id,
            signature=b"",
            issued_at_ms=command.issued_at_ms or time.time_ns() // 1_000_000,
        )
        signature = self.key.sign(privileged_message(unsigned, self.deployment.encode()))
        return msgspec.structs.replace(unsigned, signature=signature)


def fresh_authority(deployment: str, key_id: str = "fresh-1") -> tuple[Authority, RiskSigner]:
    """An authority with new random keys and the signer its risk key accepts: for tools
    that play the engine without its key files (the bench's simulations, tests)."""
    risk = Ed25519PrivateKey.generate()
    legs = LegKeys(key_id, {key_id: secrets.token_bytes(LEG_SECRET_BYTES)})
    authority = Authority(deployment, legs, {key_id: risk.public_key()})
    return authority, RiskSigner(deployment, key_id, risk)


def _kind(message: Leg | Privileged) -> str:
    match message:
        case CreditLeg():
            return "credit leg"
        case SettleLeg():
            return "settle leg"
    return str(type(message).__struct_config__.tag).replace("_", " ")
