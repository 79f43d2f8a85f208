"""``smallcups risk`` and ``smallcups keys``: the risk authority signs and publishes
privileged commands; anyone makes key files.

Only the holder of the risk private key (``security.risk_private_key_file``) can make a
command the workers accept; the workers hold the public key only. The command goes to the
internal topic (engine.kafka.client routes privileged commands there) and its result is
printed (exit 1 when rejected). ``smallcups credit`` and ``smallcups scheduler`` sign and
submit with the same helpers.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Final

import msgspec

from engine.core.authority import RiskSigner
from engine.core.config import Config
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.keyfiles import (
    new_leg_key_line,
    new_risk_key_lines,
    read_risk_private_key,
    write_secret,
)
from engine.core.messages import Command, Privileged, Result, SetCreditLimit, UnfreezeAccount
from engine.kafka.client import Client

NUMBER_DIGITS_MAX: Final = 19
"""Longest whole number read from the command line (2^63 - 1 has 19 digits)."""
_NUMBER: Final = re.compile(rf"[0-9]{{1,{NUMBER_DIGITS_MAX}}}")


def whole_number(text: str, what: str) -> int:
    """``text`` written in ASCII digits only: no sign, point, exponent or ``_``, so that
    ``10.50`` is refused rather than read as something it does not say."""
    if not _NUMBER.fullmatch(text):
        raise ConfigError(
            f"{what} must be a whole number of 1..{NUMBER_DIGITS_MAX} digits, got {text[:80]!r}"
        )
    return int(text)


def parse_account(address: str) -> tuple[int, int]:
    """``CUSTOMER/ACCOUNT`` as two integers."""
    customer_text, slash, account_text = address.partition("/")
    if not slash:
        raise ConfigError(f"expected CUSTOMER/ACCOUNT, got {address[:80]!r}")
    return whole_number(customer_text, "CUSTOMER"), whole_number(account_text, "ACCOUNT")


def privileged_command(
    action: str, address: str, amount: int | None, command_id: str | None
) -> Privileged:
    """The unsigned command of ``smallcups risk ACTION``; its id is made unique if not given."""
    customer, account = parse_account(address)
    stamp = time.time_ns() // 1_000_000
    match action:
        case "set-credit-limit":
            if amount is None:
                raise ConfigError("set-credit-limit needs the new limit in minor units")
            return SetCreditLimit(
                command_id or f"risk-limit-{customer}-{account}-{stamp}", customer, account, amount
            )
        case "unfreeze":
            return UnfreezeAccount(
                command_id or f"risk-unfreeze-{customer}-{account}-{stamp}", customer, account
            )
    raise ConfigError(f"unknown risk action {action!r}")


def run_risk(
    config: Config,
    action: str,
    address: str,
    amount: int | None,
    command_id: str | None,
    timeout_seconds: float,
) -> int:
    command = risk_signer(config).sign(privileged_command(action, address, amount, command_id))
    return submit_and_print(config, command, timeout_seconds)


def risk_signer(config: Config) -> RiskSigner:
    """The risk authority's signer for this deployment, with its private key file."""
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    return RiskSigner(config.kafka.commands_topic, key_id, key)


def submit_and_print(config: Config, command: Command, timeout_seconds: float) -> int:
    """Publish ``command``, print its result as JSON: 0 when accepted, 1 when rejected."""

    async def send() -> Result:
        async with Client(config.require_kafka()) as client:
            return await client.submit(command, timeout_seconds)

    try:
        result = asyncio.run(send())
    except TimeoutError:
        raise InfrastructureError(
            f"no result for {command.id} within {timeout_seconds:g} s: is a worker running?"
        ) from None
    print(msgspec.json.encode(result).decode())
    return 0 if result.accepted else 1


def make_keys(kind: str, path_text: str, key_id: str) -> int:
    """``smallcups keys leg|risk PATH``: a new key file (a risk key: PATH and PATH.pub)."""
    path = Path(path_text)
    if kind == "leg":
        write_secret(path, new_leg_key_line(key_id))
        print(f"wrote leg key {key_id} to {path}")
        return 0
    private, public = new_risk_key_lines(key_id)
    write_secret(path, private)
    public_path = path.with_name(path.name + ".pub")
    write_secret(public_path, public)
    print(f"wrote risk key {key_id}: private {path}, public {public_path}")
    return 0
