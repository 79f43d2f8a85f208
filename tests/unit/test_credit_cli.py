"""``smallcups credit``: its arguments and the commands they make. No servers."""

from __future__ import annotations

import re

import pytest

from engine.admin.credit import credit_command, new_command_id
from engine.admin.risk import parse_account, whole_number
from engine.cli import parser
from engine.core.authority import fresh_authority
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError
from engine.core.messages import (
    ChangeCreditLine,
    Command,
    Draw,
    GrantCreditLine,
    HoldFunds,
    PostHold,
    Reason,
    Repay,
    SuspendCreditLine,
    VoidHold,
    encode,
)

COMMAND_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
TERMS = [
    "--limit",
    "500000",
    "--rate-bp",
    "1200",
    "--overdue-rate-bp",
    "2400",
    "--loan-max",
    "100000",
    "--term-days",
    "30",
]


def command(*argv: str) -> Command:
    return credit_command(parser().parse_args(["credit", *argv]))


def test_the_risk_side() -> None:
    grant = command("grant", "42/1", "--currency", "EUR", *TERMS, "--id", "g-1")
    assert grant == GrantCreditLine("g-1", 42, 1, "EUR", 500_000, 1_200, 2_400, 100_000, 30)
    change = command("change", "42", *TERMS, "--id", "c-1")
    assert change == ChangeCreditLine("c-1", 42, 500_000, 1_200, 2_400, 100_000, 30)
    assert command("suspend", "42", "--id", "s-1") == SuspendCreditLine("s-1", 42, True)
    assert command("suspend", "42", "--lift", "--id", "s-2") == SuspendCreditLine("s-2", 42, False)


def test_a_grant_names_its_partner_bank() -> None:
    partner = ["--partner", "7", "--partner-share-bp", "8000", "--partner-rate-bp", "1000"]
    grant = command("grant", "42/1", "--currency", "EUR", *TERMS, *partner, "--id", "g-1")
    assert grant == GrantCreditLine(
        "g-1",
        42,
        1,
        "EUR",
        500_000,
        1_200,
        2_400,
        100_000,
        30,
        partner=7,
        partner_share_bp=8_000,
        partner_rate_bp=1_000,
    )
    with pytest.raises(ConfigError, match="not a valid credit grant: bad_partner"):
        command("grant", "42/1", "--currency", "EUR", *TERMS, "--partner", "7")
    with pytest.raises(ConfigError, match="not a valid credit grant: bad_partner"):
        command(
            "grant", "42/1", "--currency", "EUR", *TERMS, *partner[:4], "--partner-rate-bp", "1300"
        )
    with pytest.raises(ConfigError, match="--partner-share-bp"):
        command("grant", "42/1", "--currency", "EUR", *TERMS, *partner[:3], "80.5")


def test_the_risk_side_is_signed_with_the_risk_key() -> None:
    authority, signer = fresh_authority("prod.commands")
    grant = command("grant", "42/1", "--currency", "EUR", *TERMS)
    assert isinstance(grant, GrantCreditLine)
    signed = signer.sign(grant)
    assert authority.privileged_problem(signed) == (Reason.NONE, "")
    assert decode_command(encode(signed)) == signed


def test_the_customer_side() -> None:
    assert command("draw", "42", "2500", "--currency", "EUR", "--id", "d-1") == Draw(
        "d-1", 42, 2_500, "EUR"
    )
    assert command("repay", "42", "100", "--currency", "EUR", "--id", "r-1") == Repay(
        "r-1", 42, 100, "EUR"
    )
    hold = command("hold", "42/1", "77/2", "900", "--currency", "EUR", "--expires-on", "2026-12-20")
    assert isinstance(hold, HoldFunds)
    assert (hold.customer, hold.account, hold.to_customer, hold.to_account) == (42, 1, 77, 2)
    assert (hold.amount, hold.currency, hold.expires_on) == (900, "EUR", "2026-12-20")
    assert command("post", "42", hold.id, "500", "--id", "p-1") == PostHold("p-1", 42, hold.id, 500)
    assert command("void", "42", hold.id, "--id", "v-1") == VoidHold("v-1", 42, hold.id)


def test_ids_are_made_unique_and_valid() -> None:
    ids = {command("draw", "42", "1", "--currency", "EUR").id for _ in range(100)}
    assert len(ids) == 100
    assert all(COMMAND_ID.fullmatch(i) and i.startswith("draw-42-") for i in ids)
    longest = new_command_id("suspend", 2**63 - 1)
    assert COMMAND_ID.fullmatch(longest), longest
    assert command("suspend", "42", "--lift").id.startswith("lift-42-")


@pytest.mark.parametrize(
    "amount",
    ["10.50", "1e3", "-5", "+5", "1_000", " 7", "7 ", "0x10", "\u0661\u0662", "", "9" * 20],
)
def test_amounts_are_whole_numbers_of_minor_units(amount: str) -> None:
    with pytest.raises(ConfigError, match=r"AMOUNT .*minor units.* whole number"):
        command("draw", "42", amount, "--currency", "EUR")
    with pytest.raises(ConfigError, match="--limit"):
        command("change", "42", *TERMS, "--limit", amount)


def test_addresses_and_customers_are_read_strictly() -> None:
    assert parse_account("42/1") == (42, 1)
    for bad in ("42", "42/1/2", "42/", "/1", "+42/1", "42/-1", "4_2/1"):
        with pytest.raises(ConfigError):
            parse_account(bad)
    assert whole_number("0", "N") == 0
    with pytest.raises(ConfigError, match="CUSTOMER"):
        command("void", "-3", "h-1")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["draw", "42", "0", "--currency", "EUR"], "amount_not_positive"),
        (["draw", "42", "5", "--currency", "XXX"], "unknown_currency"),
        (["draw", "0", "5", "--currency", "EUR"], "bad_customer_id"),
        (["draw", "42", "5", "--currency", "EUR", "--id", "a/b"], "bad_command_id"),
        (["draw", "42", "5", "--currency", "EUR", "--id", "x" * 65], "bad_command_id"),
        (["hold", "42/1", "77/1", "5", "--currency", "EUR", "--expires-on", "12/20"], "bad_date"),
        (
            ["hold", "42/1", "77/0", "5", "--currency", "EUR", "--expires-on", "2026-12-20"],
            "bad_account_number",
        ),
        (["post", "42", "no/such", "5"], "hold_not_found"),
        (["change", "42", *TERMS, "--loan-max", "600000"], "bad_credit_line"),
        (["change", "42", *TERMS, "--term-days", "0"], "bad_credit_line"),
    ],
)
def test_what_the_engine_would_refuse_is_refused_before_sending(
    argv: list[str], reason: str
) -> None:
    with pytest.raises(ConfigError, match=f"not a valid credit {argv[0]}: {reason}"):
        command(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["grant", "42/1", *TERMS],
        ["grant", "42/1", "--currency", "EUR"],
        ["change", "42", *TERMS[:-2]],
        ["draw", "42", "5"],
        ["hold", "42/1", "77/1", "5", "--currency", "EUR"],
        ["post", "42", "h-1"],
        ["lend", "42", "5"],
    ],
)
def test_missing_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["credit", *argv])


def test_every_action_takes_an_id_and_a_timeout() -> None:
    for argv in (
        ["grant", "42/1", "--currency", "EUR", *TERMS],
        ["change", "42", *TERMS],
        ["suspend", "42"],
        ["draw", "42", "5", "--currency", "EUR"],
        ["repay", "42", "5", "--currency", "EUR"],
        ["hold", "42/1", "77/1", "5", "--currency", "EUR", "--expires-on", "2026-12-20"],
        ["post", "42", "h-1", "5"],
        ["void", "42", "h-1"],
    ):
        args = parser().parse_args(["credit", *argv, "--id", "i-1", "--timeout", "2.5"])
        assert (args.id, args.timeout) == ("i-1", 2.5)
        assert credit_command(args).id == "i-1"
