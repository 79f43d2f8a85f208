"""``smallcups publish`` and ``smallcups balance``: one command in, one account out."""

from __future__ import annotations

import asyncio
import sys

import msgspec

from engine.admin.setup import read_account
from engine.core.config import Config
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError
from engine.core.messages import Invalid, Undecodable
from engine.kafka.client import Client


def publish(config: Config, text: str, *, wait: bool, timeout_seconds: float) -> int:
    data = (sys.stdin.read() if text == "-" else text).encode()
    command = decode_command(data, json=True)
    if isinstance(command, Undecodable | Invalid):
        raise ConfigError(f"not a valid command: {command.reason}: {command.detail}")

    async def send() -> bytes:
        async with Client(config.require_kafka()) as client:
            if not wait:
                await (await client.publish(command))
                return msgspec.json.encode({"published": command.id})
            result = await client.submit(command, timeout_seconds)
            return msgspec.json.encode(result)

    try:
        print(asyncio.run(send()).decode())
    except TimeoutError:
        raise ConfigError(f"no result for {command.id} within {timeout_seconds} s") from None
    return 0


def balance(config: Config, address: str) -> int:
    try:
        customer_text, account_text = address.split("/")
        customer, number = int(customer_text), int(account_text)
    except ValueError:
        raise ConfigError(f"expected CUSTOMER/ACCOUNT, got {address!r}") from None
    partition, account = asyncio.run(read_account(config, customer, number))
    if account is None:
        print(f"no account {customer}/{number} (partition {partition})", file=sys.stderr)
        return 1
    print(
        msgspec.json.encode(
            {
                "customer": account.customer,
                "account": account.number,
                "currency": account.currency,
                "balance": account.balance,
                "credit_limit": account.credit_limit,
                "status": account.status.name.lower(),
                "partition": partition,
            }
        ).decode()
    )
    return 0
