"""``smallcups risk`` and ``smallcups keys``: the risk authority signs and publishes
privileged commands; anyone makes key files.

Only the holder of the risk private key (``security.risk_private_key_file``) can make a
command the workers accept; the workers hold the public key only. The command goes to the
command topic like any other and its result is printed (exit 1 when rejected).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from engine.core.authority import RiskSigner
from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.keyfiles import (
    new_leg_key_line,
    new_risk_key_lines,
    read_risk_private_key,
    write_secret,
)
from engine.core.messages import Privileged, SetCreditLimit, UnfreezeAccount
from engine.kafka.client import Client


def parse_account(address: str) -> tuple[int, int]:
    """``CUSTOMER/ACCOUNT`` as two integers."""
    try:
        customer_text, account_text = address.split("/")
        return int(customer_text), int(account_text)
    except ValueError:
        raise ConfigError(f"expected CUSTOMER/ACCOUNT, got {address[:80]!r}") from None


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
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    command = signer.sign(privileged_command(action, address, amount, command_id))

    async def send() -> bytes:
        async with Client(config.require_kafka()) as client:
            return msgspec.json.encode(await client.submit(command, timeout_seconds))

    try:
        answer = asyncio.run(send())
    except TimeoutError:
        raise ConfigError(f"no result for {command.id} within {timeout_seconds} s") from None
    print(answer.decode())
    return 0 if msgspec.json.decode(answer)["status"] == "accepted" else 1


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
