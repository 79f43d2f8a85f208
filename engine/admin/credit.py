"""``smallcups credit``: revolving credit from the command line.

The risk authority's side (``grant``, ``change``, ``suspend``) signs its command with the
risk private key, like ``smallcups risk``; the customer's side (``draw``, ``repay``,
``hold``, ``post``, ``void``) publishes plain client commands, as an upstream app would.
The rules are engine.core.credit's.

Each command is first read back by the engine's own decoder, so a command the workers
would refuse from the record alone is refused here, and one they would dead-letter (a
bad id) is not sent to wait for a result that never comes. Then it is published and its
result printed as JSON; the exit status is 1 when it was rejected.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Final

from engine.admin.risk import parse_account, risk_signer, submit_and_print, whole_number
from engine.core.config import Config
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError
from engine.core.messages import (
    PRIVILEGED_TYPES,
    ChangeCreditLine,
    Command,
    Draw,
    GrantCreditLine,
    HoldFunds,
    Invalid,
    PostHold,
    Repay,
    SuspendCreditLine,
    Undecodable,
    VoidHold,
    encode,
)

AMOUNT: Final = "AMOUNT (minor units: 1050 for 10.50)"


def new_command_id(kind: str, customer: int) -> str:
    """A fresh id: the kind, the customer, the time in ms and 32 random bits (at most
    7 + 19 + 13 + 8 and 3 dashes: 50 characters of the 64 an id may have)."""
    return f"{kind}-{customer}-{time.time_ns() // 1_000_000}-{secrets.token_hex(4)}"


def credit_command(args: argparse.Namespace) -> Command:
    """The unsigned command of ``smallcups credit ACTION ...``, checked as the engine
    reads it."""
    command = _build(args)
    decoded = decode_command(encode(command), json=False)
    if isinstance(decoded, Invalid | Undecodable):
        raise ConfigError(f"not a valid credit {args.action}: {decoded.reason}: {decoded.detail}")
    return command


def _build(args: argparse.Namespace) -> Command:
    match args.action:
        case "grant":
            customer, account = parse_account(args.account)
            command_id = args.id or new_command_id("grant", customer)
            limit, rate_bp, overdue_rate_bp, loan_max, term_days = _terms(args)
            return GrantCreditLine(
                command_id,
                customer,
                account,
                args.currency,
                limit,
                rate_bp,
                overdue_rate_bp,
                loan_max,
                term_days,
                partner=_optional(args.partner, "--partner"),
                partner_share_bp=_optional(args.partner_share_bp, "--partner-share-bp"),
                partner_rate_bp=_optional(args.partner_rate_bp, "--partner-rate-bp"),
            )
        case "change":
            customer = whole_number(args.customer, "CUSTOMER")
            command_id = args.id or new_command_id("change", customer)
            return ChangeCreditLine(command_id, customer, *_terms(args))
        case "suspend":
            customer = whole_number(args.customer, "CUSTOMER")
            command_id = args.id or new_command_id("lift" if args.lift else "suspend", customer)
            return SuspendCreditLine(command_id, customer, suspended=not args.lift)
        case "draw" | "repay":
            customer = whole_number(args.customer, "CUSTOMER")
            amount = whole_number(args.amount, AMOUNT)
            kind = Draw if args.action == "draw" else Repay
            return kind(
                args.id or new_command_id(args.action, customer), customer, amount, args.currency
            )
        case "hold":
            customer, account = parse_account(args.account)
            to_customer, to_account = parse_account(args.to_account)
            amount = whole_number(args.amount, AMOUNT)
            command_id = args.id or new_command_id("hold", customer)
            return HoldFunds(
                command_id,
                customer,
                account,
                to_customer,
                to_account,
                amount,
                args.currency,
                args.expires_on,
            )
        case "post":
            customer = whole_number(args.customer, "CUSTOMER")
            amount = whole_number(args.amount, AMOUNT)
            command_id = args.id or new_command_id("post", customer)
            return PostHold(command_id, customer, args.hold_id, amount)
        case "void":
            customer = whole_number(args.customer, "CUSTOMER")
            return VoidHold(args.id or new_command_id("void", customer), customer, args.hold_id)
    raise ConfigError(f"unknown credit action {args.action!r}")


def _optional(text: str | None, what: str) -> int:
    """An optional whole number (0 when not given: the field's default)."""
    return 0 if text is None else whole_number(text, what)


def _terms(args: argparse.Namespace) -> tuple[int, int, int, int, int]:
    """A line's terms: limit, rate_bp, overdue_rate_bp, loan_max, term_days."""
    return (
        whole_number(args.limit, "--limit (minor units)"),
        whole_number(args.rate_bp, "--rate-bp (basis points a year)"),
        whole_number(args.overdue_rate_bp, "--overdue-rate-bp (basis points a year)"),
        whole_number(args.loan_max, "--loan-max (minor units)"),
        whole_number(args.term_days, "--term-days"),
    )


def run_credit(config: Config, args: argparse.Namespace) -> int:
    """``smallcups credit ACTION``: sign (the risk side), publish, print the result."""
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    command = credit_command(args)
    if isinstance(command, PRIVILEGED_TYPES):
        command = risk_signer(config).sign(command)
    return submit_and_print(config, command, args.timeout)
