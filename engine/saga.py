"""Cross-partition transfers as a saga of legs, each applied exactly once (DESIGN.md §4).

1. the payer's partition debits the payer into its CLEARING account, records the
   transfer as in flight (its result PENDING, never published) and emits a CreditLeg to
   the payee's partition, all in one fenced commit;
2. the payee's partition applies the CreditLeg once (its id is ``<transfer>/credit``):
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

from engine.book import (
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
from engine.messages import (
    CREDIT_SUFFIX,
    SETTLE_SUFFIX,
    Balance,
    CreditLeg,
    Reason,
    Result,
    SettleLeg,
    Status,
    Transfer,
)
from engine.routing import partition_of


def credit_leg(transfer: Transfer, offset: int, published_at_ms: int) -> CreditLeg:
    """The credit leg that ``transfer``, at ``offset`` of the payer's partition, sends to
    the payee's partition."""
    return CreditLeg(
        id=transfer.id + CREDIT_SUFFIX,
        customer=transfer.to_customer,
        transfer_id=transfer.id,
        account=transfer.to_account,
        amount=transfer.amount,
        currency=transfer.currency,
        from_customer=transfer.customer,
        from_account=transfer.account,
        origin_offset=offset,
        published_at_ms=published_at_ms,
    )


def settle_leg(leg: CreditLeg, reason: Reason, detail: str, payee_balance: int) -> SettleLeg:
    """The payee side's answer to ``leg``, back to the payer's partition."""
    return SettleLeg(
        id=leg.transfer_id + SETTLE_SUFFIX,
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


class SagaRules(AccountBook):
    def transfer_out(self, command: Transfer, incoming: Incoming, outcome: Outcome) -> Decision:
        """Step 1: debit the payer into clearing, send the credit leg."""
        payer, refusal = self.movable(command.customer, command.account, command.currency)
        if payer is None:
            return refusal
        clearing = self.system_account(SystemAccount.CLEARING, command.currency)
        decision = self.move(command.id, incoming.offset, payer, clearing, command.amount, outcome)
        if decision.reason is not Reason.NONE:
            return decision
        leg = credit_leg(command, incoming.offset, incoming.published_at_ms)
        target = partition_of(command.to_customer, self.partitions)
        outcome.legs.append(Leg(incoming.offset, target, leg))
        outcome.opened.append(
            InFlight(
                command.id,
                command.to_customer,
                command.to_account,
                command.amount,
                command.currency,
                incoming.offset,
            )
        )
        return decision.as_pending()

    def credit_in(self, leg: CreditLeg, incoming: Incoming, outcome: Outcome) -> Decision:
        """Step 2: credit the payee out of clearing, or refuse; answer with a settle leg.

        A leg that reached the wrong partition is refused too, so the payer is refunded.
        """
        payee, decision = self.movable(leg.customer, leg.account, leg.currency)
        if partition_of(leg.customer, self.partitions) != self.partition:
            payee, decision = None, Decision(Reason.WRONG_PARTITION, "leg in the wrong partition")
        balance = 0
        if payee is not None:
            clearing = self.system_account(SystemAccount.CLEARING, leg.currency)
            decision = self.move(leg.id, incoming.offset, clearing, payee, leg.amount, outcome)
            balance = payee.balance
        settle = settle_leg(leg, decision.reason, decision.detail, balance)
        origin = partition_of(leg.from_customer, self.partitions)
        outcome.legs.append(Leg(incoming.offset, origin, settle))
        return decision.as_internal()

    def settle_in(
        self, leg: SettleLeg, incoming: Incoming, outcome: Outcome, now_us: int
    ) -> Decision:
        """Step 3: refund a refused transfer; publish the transfer's final result.

        A settle leg that reached the wrong partition is forwarded to the payer's.
        """
        home = partition_of(leg.customer, self.partitions)
        if home != self.partition:
            outcome.legs.append(Leg(incoming.offset, home, leg))
            return Decision(
                Reason.WRONG_PARTITION, "forwarded to the payer's partition", internal=True
            )
        payer = self.accounts.get((leg.customer, leg.account))
        if payer is None:
            detail = f"settle leg for unknown payer {(leg.customer, leg.account)}"
            return Decision(Reason.ACCOUNT_NOT_FOUND, detail, internal=True)
        touched: tuple[Balance, ...]
        if leg.reason:
            clearing = self.system_account(SystemAccount.CLEARING, leg.currency)
            refund = self.move(leg.id, incoming.offset, clearing, payer, leg.amount, outcome)
            if refund.reason is not Reason.NONE:
                return refund.as_internal()
            decision = refund.as_internal()
            status, touched = (
                Status.REJECTED,
                (Balance(payer.customer, payer.number, payer.balance),),
            )
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
            partition=self.partition,
            offset=leg.origin_offset,
        )
        outcome.published.append(Publish(incoming.offset, leg.customer, final))
        outcome.finals.append(Applied(leg.transfer_id, 0, final))
        outcome.settled.append(leg.transfer_id)
        return decision
