"""The locust command mix: pure planning, expectations, same- and cross-partition payees."""

from __future__ import annotations

import random

import pytest

from engine.core.decoding import validate
from engine.core.messages import (
    COMMAND_TYPES,
    Deposit,
    HoldFunds,
    OpenAccount,
    Reason,
    Result,
    Status,
    Transfer,
    VoidHold,
)
from engine.core.routing import partition_of
from loadtest import mix
from loadtest.mix import Directory, Expectation, Mix, new_customer

PARTITIONS = 8


def _result(status: Status, reason: Reason = Reason.NONE) -> Result:
    return Result("c1", status, reason, "detail" if reason else "")


def _mix(seed: int = 1) -> Mix:
    return Mix(random.Random(seed), Directory(PARTITIONS), "run1-u1")


def test_expectations_judge_results() -> None:
    accepted, rejected = _result(Status.ACCEPTED), _result(Status.REJECTED, Reason.SAME_ACCOUNT)
    unfunded = _result(Status.REJECTED, Reason.INSUFFICIENT_FUNDS)

    assert mix.ACCEPTED.failure(accepted) == ""
    assert mix.ACCEPTED.failure(rejected) == "rejected: same_account detail"
    assert mix.ACCEPTED_OR_UNFUNDED.failure(unfunded) == ""
    bad_amount = mix.rejected_with(Reason.AMOUNT_NOT_POSITIVE)
    assert bad_amount.failure(_result(Status.REJECTED, Reason.AMOUNT_NOT_POSITIVE)) == ""
    assert bad_amount.failure(accepted) == "accepted, expected a rejection"
    assert bad_amount.failure(unfunded).startswith("rejected: insufficient_funds")
    assert Expectation(False).failure(rejected) != ""


def test_new_customers_land_in_the_partition_asked_for() -> None:
    rng = random.Random(3)
    for partition in range(PARTITIONS):
        customer = new_customer(rng, PARTITIONS, partition)
        assert partition_of(customer, PARTITIONS) == partition
        assert 1 <= customer < mix.CUSTOMER_ID_MAX


def test_opening_opens_and_funds_one_account() -> None:
    planned = _mix().opening(42)

    assert [type(p.command) for p in planned] == [OpenAccount, Deposit]
    assert [p.name for p in planned] == ["open_account", "deposit"]
    assert all(p.expectation == mix.ACCEPTED and p.command.customer == 42 for p in planned)


def test_first_customers_share_a_partition() -> None:
    for seed in range(20):
        first, second = _mix(seed).first_customers()
        assert first != second
        assert partition_of(first, PARTITIONS) == partition_of(second, PARTITIONS)


def test_same_partition_transfers_pay_a_neighbour_or_the_pair() -> None:
    planner = _mix()
    pair = planner.first_customers()
    alone = planner.transfer(*pair)
    assert alone.name == "transfer" and alone.expectation == mix.ACCEPTED_OR_UNFUNDED

    payer = new_customer(planner.rng, PARTITIONS, (partition_of(pair[0], PARTITIONS) + 1) % 8)
    fallback = planner.same_partition_transfer(payer, pair)
    assert isinstance(fallback.command, Transfer)
    assert (fallback.command.customer, fallback.command.to_customer) == pair

    neighbour = new_customer(planner.rng, PARTITIONS, partition_of(payer, PARTITIONS))
    planner.directory.add(payer)
    planner.directory.add(neighbour)
    planned = planner.same_partition_transfer(payer, pair)
    assert isinstance(planned.command, Transfer)
    assert (planned.command.customer, planned.command.to_customer) == (payer, neighbour)
    with pytest.raises(ValueError, match="not in one partition"):
        planner.same_partition_transfer(new_customer(planner.rng, PARTITIONS, 0), (1, 2))


def test_cross_partition_transfers_pay_another_partition() -> None:
    planner = _mix()
    payer = planner.new_customer()
    unknown = planner.cross_partition_transfer(payer)
    planner.directory.add(payer)
    stranger = new_customer(planner.rng, PARTITIONS, (partition_of(payer, PARTITIONS) + 3) % 8)
    planner.directory.add(stranger)
    known = planner.cross_partition_transfer(payer)

    for planned in (unknown, known):
        assert isinstance(planned.command, Transfer)
        assert planned.name == "transfer (cross-partition)"
        assert partition_of(planned.command.to_customer, PARTITIONS) != partition_of(
            payer, PARTITIONS
        )
    assert isinstance(known.command, Transfer) and known.command.to_customer == stranger
    single = Mix(random.Random(1), Directory(1), "r")
    with pytest.raises(ValueError, match="at least 2 partitions"):
        single.cross_partition_transfer(5)


def test_invalid_commands_fail_validation_with_the_expected_reason() -> None:
    planner = _mix()
    for planned in (planner.invalid_amount(7), planner.invalid_currency(7)):
        (reason,) = planned.expectation.reasons
        assert not planned.expectation.accepted
        assert validate(planned.command)[0] is reason
        assert planned.name == f"deposit ({reason.value})"


def test_valid_commands_pass_validation_and_ids_are_unique() -> None:
    planner = _mix()
    payer, payee = planner.first_customers()
    planned = [
        *planner.opening(payer),
        planner.deposit(payer),
        planner.withdraw(payer),
        planner.transfer(payer, payee),
        planner.cross_partition_transfer(payer),
    ]
    for plan in planned:
        assert validate(plan.command) == (Reason.NONE, "")
        assert type(plan.command) in COMMAND_TYPES
    ids = [p.command.id for p in planned]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("run1-u1-") for i in ids)


def test_the_directory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mix, "CUSTOMERS_MAX", 3)
    directory = Directory(PARTITIONS)
    for customer in range(1, 10):
        directory.add(customer)

    assert directory.size == 3
    assert sum(len(c) for c in directory.by_partition.values()) == 3
    with pytest.raises(ValueError):
        Directory(0)


def test_credit_in_the_mix_is_judged_by_what_invitation_only_credit_answers() -> None:
    planner = _mix()
    customer, payee = planner.first_customers()
    hold, void = planner.hold_and_void(customer, payee)
    assert isinstance(hold.command, HoldFunds) and isinstance(void.command, VoidHold)
    assert void.command.hold_id == hold.command.id
    assert hold.expectation.failure(_result(Status.REJECTED, Reason.NO_BUSINESS_DATE)) == ""
    assert hold.expectation.failure(_result(Status.REJECTED, Reason.ACCOUNT_FROZEN)) != ""
    assert void.expectation.failure(_result(Status.REJECTED, Reason.HOLD_NOT_FOUND)) == ""
    draw = planner.draw_without_line(customer)
    assert draw.expectation.failure(_result(Status.REJECTED, Reason.NO_CREDIT_LINE)) == ""
    assert draw.expectation.failure(_result(Status.ACCEPTED)) != ""
