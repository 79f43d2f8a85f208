"""``smallcups risk``: the risk authority signs and publishes privileged commands.

Only the holder of the risk private key (``security.risk_private_key_file``) can make a
command the workers accept; the workers hold the public key only. The command goes to the
command topic like any other and its result is printed (exit 1 when rejected).
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from engine.authority import RiskSigner
from engine.client import Client
from engine.config import Config
from engine.errors import ConfigError
from engine.keyfiles import read_risk_private_key
from engine.messages import Privileged, SetCreditLimit, UnfreezeAccount


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
        async with Client(config.kafka) as client:
            return msgspec.json.encode(await client.submit(command, timeout_seconds))

    try:
        answer = asyncio.run(send())
    except TimeoutError:
        raise ConfigError(f"no result for {command.id} within {timeout_seconds} s") from None
    print(answer.decode())
    return 0 if msgspec.json.decode(answer)["status"] == "accepted" else 1
