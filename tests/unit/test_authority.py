"""Proofs: a leg carries the workers' MAC for its partition, a privileged command the risk
authority's signature; anything else is refused. Key files never show a key."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from engine.core.authority import Authority, LegKeys, RiskSigner, fresh_authority
from engine.core.config import LEG_KEYS_FILE, RISK_PRIVATE_KEY_FILE, RISK_PUBLIC_KEYS_FILE
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError
from engine.core.keyfiles import (
    ensure_local_keys,
    read_leg_keys,
    read_risk_private_key,
    read_risk_public_keys,
)
from engine.core.messages import Reason, SetCreditLimit, Transfer, UnfreezeAccount, encode
from engine.core.saga import credit_leg, settle_leg

DEPLOYMENT = "prod.commands"
LEG = credit_leg(Transfer("t-1", 11, 1, 22, 1, 500, "EUR"), 40, 1_700_000_000_000)


def test_a_signed_leg_verifies_for_its_partition_only() -> None:
    authority, _ = fresh_authority(DEPLOYMENT)
    signed = authority.sign_leg(LEG, 7)
    assert authority.leg_problem(signed, 7) == ""
    assert "wrong MAC" in authority.leg_problem(signed, 8)
    decoded = decode_command(encode(signed))
    assert decoded == signed, "the MAC survives the wire"


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 501},
        {"customer": 23},
        {"account": 2},
        {"from_customer": 12},
        {"transfer_id": "t-2", "id": "t-2/credit"},
        {"origin_offset": 41},
        {"published_at_ms": 1},
        {"currency": "USD"},
    ],
)
def test_any_change_to_a_signed_leg_breaks_its_mac(change: dict[str, object]) -> None:
    authority, _ = fresh_authority(DEPLOYMENT)
    tampered = msgspec.structs.replace(authority.sign_leg(LEG, 7), **change)
    assert "wrong MAC" in authority.leg_problem(tampered, 7)


def test_unsigned_unknown_key_and_other_deployment_legs_are_refused() -> None:
    authority, _ = fresh_authority(DEPLOYMENT)
    assert "without a MAC" in authority.leg_problem(LEG, 7)
    stranger, _ = fresh_authority(DEPLOYMENT, key_id="other")
    assert "unknown key" in authority.leg_problem(stranger.sign_leg(LEG, 7), 7)
    same_keys = Authority("staging.commands", authority._legs, {})
    assert "wrong MAC" in authority.leg_problem(same_keys.sign_leg(LEG, 7), 7)


def test_keys_rotate_without_downtime() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = Authority(DEPLOYMENT, LegKeys("old", {"old": old}), {})
    during = Authority(DEPLOYMENT, LegKeys("old", {"old": old, "new": new}), {})
    switched = Authority(DEPLOYMENT, LegKeys("new", {"new": new, "old": old}), {})
    after = Authority(DEPLOYMENT, LegKeys("new", {"new": new}), {})
    for signer in (before, during, switched):
        for verifier in (before, during, switched):
            legs_ok = signer._legs.signing in verifier._legs.secrets
            assert (verifier.leg_problem(signer.sign_leg(LEG, 3), 3) == "") == legs_ok
    assert after.leg_problem(switched.sign_leg(LEG, 3), 3) == ""
    assert after.leg_problem(before.sign_leg(LEG, 3), 3) != ""


def test_a_settle_leg_is_signed_like_a_credit_leg() -> None:
    authority, _ = fresh_authority(DEPLOYMENT)
    settle = authority.sign_leg(settle_leg(LEG, Reason.ACCOUNT_CLOSED, "closed", 0), 2)
    assert authority.leg_problem(settle, 2) == ""
    forged = msgspec.structs.replace(settle, reason="")
    assert authority.leg_problem(forged, 2) != ""


def test_privileged_commands_need_the_risk_signature() -> None:
    authority, signer = fresh_authority(DEPLOYMENT)
    grant = SetCreditLimit("l-1", 11, 1, 10**15)
    assert authority.privileged_problem(grant)[0] is Reason.NOT_SIGNED
    signed = signer.sign(grant)
    assert authority.privileged_problem(signed) == (Reason.NONE, "")
    more = msgspec.structs.replace(signed, credit_limit=10**15 - 1)
    assert authority.privileged_problem(more)[0] is Reason.BAD_SIGNATURE
    _, stranger = fresh_authority(DEPLOYMENT, key_id="rogue")
    assert authority.privileged_problem(stranger.sign(grant))[0] is Reason.BAD_SIGNATURE
    imposter = RiskSigner(DEPLOYMENT, signer.key_id, stranger.key)
    assert authority.privileged_problem(imposter.sign(grant))[0] is Reason.BAD_SIGNATURE
    elsewhere = RiskSigner("staging.commands", signer.key_id, signer.key)
    assert authority.privileged_problem(elsewhere.sign(grant))[0] is Reason.BAD_SIGNATURE
    unfreeze = signer.sign(UnfreezeAccount("u-1", 11, 1))
    assert authority.privileged_problem(unfreeze) == (Reason.NONE, "")
    decoded = decode_command(encode(unfreeze))
    assert isinstance(decoded, UnfreezeAccount)
    assert authority.privileged_problem(decoded) == (Reason.NONE, "")


def test_local_keys_are_made_once_readable_by_their_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    made = ensure_local_keys(folder)
    assert {p.name for p in made} == {LEG_KEYS_FILE, RISK_PRIVATE_KEY_FILE, RISK_PUBLIC_KEYS_FILE}
    assert ensure_local_keys(folder) == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    legs = read_leg_keys(folder / LEG_KEYS_FILE)
    key_id, private = read_risk_private_key(folder / RISK_PRIVATE_KEY_FILE)
    authority = Authority(DEPLOYMENT, legs, read_risk_public_keys(folder / RISK_PUBLIC_KEYS_FILE))
    grant = RiskSigner(DEPLOYMENT, key_id, private).sign(SetCreditLimit("l", 1, 1, 5))
    assert authority.privileged_problem(grant) == (Reason.NONE, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k1 zz\n", "not hexadecimal"),
        ("k1 " + "ab" * 31 + "\n", "must be 32 bytes"),
        ("bad id! " + "ab" * 32 + "\n", "expected '<key id> <hex>'"),
        ("# comment only\n", "holds no leg key"),
        ("k1 " + "ab" * 32 + "\nk1 " + "cd" * 32 + "\n", "appears twice"),
    ],
)
def test_a_bad_key_file_is_refused_without_showing_a_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as raised:
        read_leg_keys(path)
    assert "abab" not in str(raised.value) and "cdcd" not in str(raised.value)


def test_a_missing_key_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read key file"):
        read_leg_keys(tmp_path / "absent")
