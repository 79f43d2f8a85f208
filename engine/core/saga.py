"""Cross-partition transfers as a saga of legs, each applied exactly once (docs/design.md §4).

1. the payer's partition debits the payer into its CLEARING account, records the
   transfer as in flight (its result PENDING, never published) and emits a CreditLeg to
   the payee's partition, all in one fenced commit;
2. the payee's partition applies the CreditLeg once (its id is ``<transfer>/credit/<payer>``):
   it credits the payee out of its own CLEARING account, or refuses (unknown, frozen or
   closed account, currency mismatch, overflow); either way it emits a SettleLeg back;
3. the payer's partition applies the SettleLeg once (``<transfer>/settle``): a refusal
   refunds the payer out of CLEARING; then it publishes the transfer's one final result
   and replaces the PENDING record with it.

Clearing accounts hold +amount on the payer's side from step 1 and -amount on the
payee's side from step 2, so across all cups they sum to the money in flight, and
sum(customer balances) + in flight == deposits - withdrawals at every instant.
"""

from __future__ import annotations

from engine.core.book import (
    IN_FLIGHT_PER_PARTITION_MAX,
    AccountBook,
    Applied,
    Decision,
    Incoming,
    InFlight,
    Leg,
    Outcome,
    Publish,
    SystemAccount,
)
from engine.core.errors import InvariantError, invariant
from engine.core.messages import (
    Balance,
    CreditLeg,
    Reason,
    Result,
    SettleLeg,
    Status,
    Transfer,
    credit_leg_id,
    settle_leg_id,
)
from engine.core.routing import partition_of


def credit_leg(transfer: Transfer, offset: int, published_at_ms: int) -> CreditLeg:
    """The credit leg that ``transfer``, at ``offset`` of the payer's partition, sends to
    the payee's partition."""
    return CreditLeg(
        id=credit_leg_id(transfer.id, transfer.customer),
        customer=transfer.to_customer,
        transfer_id=transfer.id,
        account=transfer.to_account,
        amount=transfer.amount,
        currency=transfer.currency,
        from_customer=transfer.customer,
        from_account=transfer.account,
        origin_offset=offset,
        published_at_ms=published_at_ms,
        issued_at_ms=transfer.issued_at_ms or published_at_ms,
    )


def settle_leg(leg: CreditLeg, reason: Reason, detail: str, payee_balance: int) -> SettleLeg:
    """The payee side's answer to ``leg``, back to the payer's partition."""
    return SettleLeg(
        id=settle_leg_id(leg.transfer_id),
        customer=leg.from_customer,
        transfer_id=leg.transfer_id,
        account=leg.from_account,
        amount=leg.amount,
        currency=leg.currency,
        to_customer=leg.customer,
        to_account=leg.account,
        reason=reason.value,
        detail=detail,
        payee_balance=payee_balance,
        origin_offset=leg.origin_offset,
        published_at_ms=leg.published_at_ms,
    )


def pay(book: AccountBook, command: Transfer, incoming: Incoming, outcome: Outcome) -> Decision:
    """A transfer between two accounts: one movement when the payee lives in this
    partition, else the saga's first step (``transfer_out``)."""
    if partition_of(command.to_customer, book.partitions) != book.partition:
        return transfer_out(book, command, incoming, outcome)
    payer, refusal = book.movable(command.customer, command.account, command.currency)
    if payer is None:
        return refusal
    payee, refusal = book.movable(command.to_customer, command.to_account, command.currency)
    if payee is None:
        return refusal
    return book.move(command.id, incoming.seq, payer, payee, command.amount, outcome)


def transfer_out(
    book: AccountBook, command: Transfer, incoming: Incoming, outcome: Outcome
) -> Decision:
    """Step 1: debit the payer into clearing, send the credit leg."""
    payer, refusal = book.movable(command.customer, command.account, command.currency)
    if payer is None:
        return refusal
    invariant(
        partition_of(command.to_customer, book.partitions) != book.partition, "a saga crosses"
    )
    if len(book.in_flight) >= IN_FLIGHT_PER_PARTITION_MAX:
        detail = f"{len(book.in_flight)} transfers of this partition are in flight; retry"
        return Decision(Reason.TOO_MANY_IN_FLIGHT, detail)
    clearing = book.system_account(SystemAccount.CLEARING, command.currency)
    decision = book.move(command.id, incoming.seq, payer, clearing, command.amount, outcome)
    if decision.reason is not Reason.NONE:
        return decision
    leg = credit_leg(command, incoming.offset, incoming.published_at_ms)
    target = partition_of(command.to_customer, book.partitions)
    outcome.legs.append(Leg(incoming.seq, target, leg))
    flight = InFlight(
        command.id,
        command.customer,
        command.account,
        command.to_customer,
        command.to_account,
        command.amount,
        command.currency,
        incoming.offset,
        incoming.json,
        incoming.forwarded_from,
    )
    book.track(flight)
    outcome.opened.append(flight)
    return decision.as_pending()


def credit_in(
    book: AccountBook, leg: CreditLeg, incoming: Incoming, outcome: Outcome, horizon_ms: int
) -> Decision:
    """Step 2: credit the payee out of clearing, or refuse; answer with a settle leg.

    A leg for a customer of another partition is forged: a worker addresses every leg
    to its customer's partition (and its MAC covers that partition). A leg issued (with
    its transfer) before the partition's idempotency window (``horizon_ms``) is refused
    as expired: its record could be gone, so it could be a copy of a leg applied long
    ago; the payer refunds the transfer."""
    if partition_of(leg.customer, book.partitions) != book.partition:
        return _forged(f"credit leg for customer {leg.customer} of another partition")
    payee, decision = book.movable(leg.customer, leg.account, leg.currency)
    balance = 0
    issued_at_ms = leg.issued_at_ms or leg.published_at_ms
    if issued_at_ms < horizon_ms:
        payee = None
        detail = f"transfer issued at {issued_at_ms} ms, before the payee's window ({horizon_ms})"
        decision = Decision(Reason.ID_EXPIRED, detail)
    if payee is not None:
        clearing = book.system_account(SystemAccount.CLEARING, leg.currency)
        decision = book.move(leg.id, incoming.seq, clearing, payee, leg.amount, outcome)
        balance = payee.balance
    settle = settle_leg(leg, decision.reason, decision.detail, balance)
    origin = partition_of(leg.from_customer, book.partitions)
    outcome.legs.append(Leg(incoming.seq, origin, settle))
    return decision.as_internal()


def settle_in(
    book: AccountBook, leg: SettleLeg, incoming: Incoming, outcome: Outcome, now_us: int
) -> Decision:
    """Step 3: refund a refused transfer; publish the transfer's final result.

    The leg must match the transfer in flight it settles (payer, payee, amount,
    currency, offset), else it is forged and changes nothing."""
    flight = book.in_flight.get(leg.transfer_id)
    if flight is None:
        return _forged(f"no transfer {leg.transfer_id!r} is in flight here")
    claimed = (leg.customer, leg.account, leg.to_customer, leg.to_account)
    if claimed != (flight.customer, flight.account, flight.to_customer, flight.to_account) or (
        leg.amount,
        leg.currency,
        leg.origin_offset,
    ) != (flight.amount, flight.currency, flight.offset):
        return _forged(f"settle leg does not match transfer {leg.transfer_id!r} in flight")
    payer = book.accounts.get((leg.customer, leg.account))
    if payer is None:
        raise InvariantError(f"transfer {leg.transfer_id} in flight from a missing payer")
    touched: tuple[Balance, ...]
    if leg.reason:
        clearing = book.system_account(SystemAccount.CLEARING, leg.currency)
        refund = book.move(leg.id, incoming.seq, clearing, payer, leg.amount, outcome)
        if refund.reason is not Reason.NONE:
            return refund.as_internal()
        decision = refund.as_internal()
        status = Status.REJECTED
        touched = (Balance(payer.customer, payer.number, payer.balance),)
    else:
        decision = Decision(Reason.NONE, "", internal=True)
        status = Status.ACCEPTED
        touched = (
            Balance(payer.customer, payer.number, payer.balance),
            Balance(leg.to_customer, leg.to_account, leg.payee_balance),
        )
    final = Result(
        command_id=leg.transfer_id,
        status=status,
        reason=Reason(leg.reason),
        detail=leg.detail,
        balances=touched,
        committed_at_us=now_us,
        published_at_ms=leg.published_at_ms,
        partition=book.partition,
        offset=leg.origin_offset,
        forwarded_from=flight.forwarded_from,
    )
    book.untrack(leg.transfer_id)
    outcome.published.append(Publish(incoming.seq, leg.customer, final, flight.json))
    outcome.finals.append(Applied(leg.transfer_id, 0, final, incoming.seq))
    outcome.settled.append(leg.transfer_id)
    return decision


def _forged(detail: str) -> Decision:
    """A leg no worker made: refused, unrecorded, sent to the DLQ (engine.core.ledger)."""
    return Decision(Reason.FORGED_LEG, detail, internal=True)
