"""The pure ledger: (accounts, batch of commands) -> (results, journal rows, changes).

No I/O, no clock, no Kafka, no database: the caller passes the accounts a batch touches,
the results already recorded for the batch's command ids, and the time. The ledger
decides every command in order, mutates the account book in place (the book is the
worker's cache of its partition; if the commit fails, the caller drops it) and returns
what must be committed.

Rules (docs/design.md §4):

- Double entry: every accepted money movement writes journal rows that sum to zero per
  currency. Deposits and withdrawals move money against the partition's CASH system
  account (customer 0), so sum(customer balances) == -CASH == deposits - withdrawals.
- No overdraft by default; ``credit_limit`` lets a balance go down to ``-credit_limit``.
  Only the risk authority sets it (``set_credit_limit``, signed), never below what the
  account owes already.
- Credit lines, loans, interest and holds: engine.core.credit (docs/credit.md).
- Frozen and closed accounts refuse every movement; a closed account stays closed, and
  an account with transfers in flight out of it cannot close (their refunds land there).
  Only the risk authority unfreezes (``unfreeze_account``, signed).
- A command id seen before with the same content returns the original result and
  changes nothing; with other content it is rejected as a conflict.
- A transfer whose payee lives in another partition is a saga (engine.core.saga). A leg
  that no worker could have sent (engine.core.saga decides: wrong partition, no matching
  transfer in flight, an id applied before with other content) changes nothing and is
  not recorded, so it cannot take the id of the real leg: it goes to the DLQ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

from engine.core.book import (
    MOVABLE,
    Account,
    AccountBook,
    AccountKey,
    AccountStatus,
    Applied,
    Decision,
    Forged,
    Incoming,
    Known,
    Outcome,
    Publish,
    SystemAccount,
    check_balanced,
)
from engine.core.credit import CreditBook
from engine.core.errors import invariant
from engine.core.messages import (
    LEG_TYPES,
    Balance,
    ChangeCreditLine,
    CloseAccount,
    CloseBusinessDay,
    Command,
    CreditLeg,
    Deposit,
    Draw,
    FreezeAccount,
    GrantCreditLine,
    HoldFunds,
    Invalid,
    OpenAccount,
    PostHold,
    Reason,
    RegisterPartner,
    Repay,
    Result,
    SetCreditLimit,
    SettleLeg,
    Status,
    SuspendCreditLine,
    Transfer,
    UnfreezeAccount,
    VoidHold,
    Withdraw,
    type_tag,
)
from engine.core.routing import partition_of
from engine.core.saga import credit_in, pay, settle_in

MOVEMENT_TYPES: Final = (Deposit, Withdraw, Transfer)
"""Commands that move money: their result always shows the payer's balance."""


class IdempotencyWindow(NamedTuple):
    """How long a partition keeps idempotency records (engine.core.config.WorkerConfig)."""

    window_ms: int
    skew_max_ms: int
    """How far past the worker's clock a command's ``issued_at_ms`` may be."""


class PartitionLedger:
    """Decides the commands of one partition against its account book.

    With an idempotency ``window``, the partition's horizon (``horizon_ms``) follows the
    clock, ``window_ms`` behind it, and never goes back: a command issued before it is
    answered ``id_expired`` and not recorded, and the records of commands issued before it
    may be deleted (engine.worker.housekeeping). Since the horizon is committed with every
    batch and loaded at each claim, a record is deleted only after every owner of the
    partition refuses its command, whatever their clocks say. Without a window (tests,
    benchmarks of the ledger alone) nothing expires."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        accounts: dict[AccountKey, Account],
        window: IdempotencyWindow | None = None,
    ):
        self.book = AccountBook(partition, partitions, accounts)
        self.credit = CreditBook(self.book)
        self.partition = partition
        self.partitions = partitions
        self.window = window
        self.horizon_ms = 0
        """Commands issued before this (ms since the epoch) are expired here."""

    def raise_horizon(self, horizon_ms: int) -> None:
        """Move the horizon forward (the claim's, or a count limit's); never back."""
        self.horizon_ms = max(self.horizon_ms, horizon_ms)

    def decide_batch(
        self, batch: Sequence[Incoming], known: Mapping[str, Known], now_us: int
    ) -> Outcome:
        """Decide ``batch`` in order. ``known`` holds earlier results of its command ids."""
        if self.window is not None:
            self.raise_horizon(now_us // 1000 - self.window.window_ms)
        outcome = Outcome(horizon_ms=self.horizon_ms)
        seen: dict[str, Known] = {}
        for incoming in batch:
            result = self._decide_one(incoming, known, seen, outcome, now_us)
            outcome.results.append(result)
        invariant(len(outcome.results) == len(batch), "one result per command")
        check_balanced(outcome.journal)
        return outcome

    def _decide_one(
        self,
        incoming: Incoming,
        known: Mapping[str, Known],
        seen: dict[str, Known],
        outcome: Outcome,
        now_us: int,
    ) -> Result:
        command = incoming.command
        if isinstance(command, Invalid):
            result = self._result(incoming, now_us, Decision(command.reason, command.detail))
            outcome.published.append(Publish(incoming.seq, command.customer, result, incoming.json))
            return result
        late = None if isinstance(command, LEG_TYPES) else self._issued_problem(command, now_us)
        if late is not None:
            result = self._result(incoming, now_us, late)
            outcome.published.append(Publish(incoming.seq, command.customer, result, incoming.json))
            return result
        previous = seen.get(command.id) or known.get(command.id)
        if previous is not None:
            return self._repeated(incoming, command, previous, outcome, now_us)
        decision = self._apply(command, incoming, outcome, now_us)
        result = self._result(incoming, now_us, decision)
        if decision.reason is Reason.FORGED_LEG:
            tag = type_tag(type(command))
            outcome.forged.append(Forged(incoming.seq, tag, decision.detail, command.id))
            return result
        if decision.reason is Reason.NONE:
            for account in decision.touched:
                outcome.changed[account.key] = account
        if not (decision.pending or decision.internal):
            outcome.published.append(Publish(incoming.seq, command.customer, result, incoming.json))
        seen[command.id] = Known(incoming.fingerprint, result)
        issued_at_ms = command.issued_at_ms or incoming.published_at_ms
        outcome.applied.append(
            Applied(command.id, incoming.fingerprint, result, incoming.seq, issued_at_ms)
        )
        return result

    def _issued_problem(self, command: Command, now_us: int) -> Decision | None:
        """Why a client or privileged command cannot be decided at this time, if it cannot:
        no issue time, one too far ahead of the clock, or one before the window (its
        record may be gone, so it could be a re-send of a command applied long ago).
        Checked before its id is looked up: the answer does not depend on whether the
        pruner has reached the record yet."""
        window = self.window
        if window is None:
            return None
        issued_at_ms = command.issued_at_ms
        if issued_at_ms <= 0:
            detail = (
                "issued_at_ms is required: the time the command was first issued, in ms since "
                "the epoch, the same on every re-send"
            )
            return Decision(Reason.ISSUED_AT, detail)
        latest_ms = now_us // 1000 + window.skew_max_ms
        if issued_at_ms > latest_ms:
            detail = f"issued_at_ms {issued_at_ms} is ahead of the engine's clock ({latest_ms})"
            return Decision(Reason.ISSUED_AT, detail)
        if issued_at_ms < self.horizon_ms:
            detail = (
                f"issued at {issued_at_ms} ms, before this partition's idempotency window "
                f"(from {self.horizon_ms} ms): never applied; issue it again under a new id "
                "if it is still wanted"
            )
            return Decision(Reason.ID_EXPIRED, detail)
        return None

    def _repeated(
        self,
        incoming: Incoming,
        command: Command,
        previous: Known,
        outcome: Outcome,
        now_us: int,
    ) -> Result:
        """A command id applied before: the same content gets the original result (a leg
        gets nothing: legs have no result of their own), other content is a conflict (a
        leg with other content is forged)."""
        if previous.fingerprint != incoming.fingerprint:
            detail = f"command id {command.id} was used before for another command"
            if isinstance(command, LEG_TYPES):
                decision = Decision(Reason.FORGED_LEG, detail, internal=True)
                outcome.forged.append(Forged(incoming.seq, type_tag(type(command)), detail))
                return self._result(incoming, now_us, decision)
            result = self._result(incoming, now_us, Decision(Reason.DUPLICATE_CONFLICT, detail))
            outcome.published.append(Publish(incoming.seq, command.customer, result, incoming.json))
            return result
        if previous.result.status is not Status.PENDING and not isinstance(command, LEG_TYPES):
            outcome.published.append(
                Publish(incoming.seq, command.customer, previous.result, incoming.json)
            )
        return previous.result

    def _result(self, incoming: Incoming, now_us: int, decision: Decision) -> Result:
        balances: tuple[Balance, ...] = ()
        if decision.reason is not Reason.NONE:
            status = Status.REJECTED
            balances = self._payer_balance(incoming.command)
        elif decision.pending:
            status = Status.PENDING
        else:
            status = Status.ACCEPTED
            balances = tuple(
                [
                    Balance(a.customer, a.number, a.balance)
                    for a in decision.touched
                    if not a.is_system
                ]
            )
        return Result(
            command_id=incoming.command.id,
            status=status,
            reason=decision.reason,
            detail=decision.detail,
            balances=balances,
            committed_at_us=now_us,
            published_at_ms=incoming.published_at_ms,
            partition=self.partition,
            offset=incoming.offset,
            forwarded_from=incoming.forwarded_from,
        )

    def _payer_balance(self, command: Command | Invalid) -> tuple[Balance, ...]:
        """A refused movement's result shows the payer's balance too, as an accepted one
        does (one shape whatever refused it), when the payer's account exists."""
        if not isinstance(command, MOVEMENT_TYPES):
            return ()
        account = self.book.accounts.get((command.customer, command.account))
        if account is None:
            return ()
        return (Balance(account.customer, account.number, account.balance),)

    def _apply(
        self, command: Command, incoming: Incoming, outcome: Outcome, now_us: int
    ) -> Decision:
        home = partition_of(command.customer, self.partitions)
        if home != self.partition and not isinstance(command, LEG_TYPES):
            detail = f"customer {command.customer} is in partition {home}; forwarded once already"
            return Decision(Reason.WRONG_PARTITION, detail)
        seq = incoming.seq
        match command:
            case OpenAccount():
                return self._open(command)
            case Deposit():
                return self._deposit(command, seq, outcome)
            case Withdraw():
                return self._withdraw(command, seq, outcome)
            case Transfer():
                return self._transfer(command, incoming, outcome)
            case CreditLeg():
                return credit_in(self.book, command, incoming, outcome, self.horizon_ms)
            case SettleLeg():
                return settle_in(self.book, command, incoming, outcome, now_us)
            case FreezeAccount():
                return self._set_status(command.customer, command.account, AccountStatus.FROZEN)
            case CloseAccount():
                return self._close(command)
            case SetCreditLimit():
                return self._set_credit_limit(command)
            case UnfreezeAccount():
                return self._set_status(command.customer, command.account, AccountStatus.OPEN)
            case Draw():
                return self.credit.draw(command, incoming, outcome)
            case Repay():
                return self.credit.repay(command, incoming, outcome)
            case HoldFunds():
                return self.credit.hold(command, outcome)
            case PostHold():
                return self.credit.post(command, incoming, outcome)
            case VoidHold():
                return self.credit.void(command, outcome)
            case GrantCreditLine():
                return self.credit.grant(command, outcome)
            case ChangeCreditLine():
                return self.credit.change(command, outcome)
            case SuspendCreditLine():
                return self.credit.suspend(command, outcome)
            case CloseBusinessDay():
                return self.credit.close_day(command, seq, outcome)
            case RegisterPartner():
                return self.credit.register(command, outcome)

    def _open(self, command: OpenAccount) -> Decision:
        key = (command.customer, command.account)
        if key in self.book.accounts:
            return Decision(Reason.ACCOUNT_EXISTS, f"account {key} already exists")
        account = Account(command.customer, command.account, command.currency)
        self.book.accounts[key] = account
        return Decision(Reason.NONE, "", (account,))

    def _deposit(self, command: Deposit, seq: int, outcome: Outcome) -> Decision:
        account, refusal = self.book.movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        cash = self.book.system_account(SystemAccount.CASH, command.currency)
        return self.book.move(command.id, seq, cash, account, command.amount, outcome)

    def _withdraw(self, command: Withdraw, seq: int, outcome: Outcome) -> Decision:
        account, refusal = self.book.movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        cash = self.book.system_account(SystemAccount.CASH, command.currency)
        return self.book.move(command.id, seq, account, cash, command.amount, outcome)

    def _transfer(self, command: Transfer, incoming: Incoming, outcome: Outcome) -> Decision:
        if (command.customer, command.account) == (command.to_customer, command.to_account):
            return Decision(Reason.SAME_ACCOUNT, "a transfer needs two different accounts")
        return pay(self.book, command, incoming, outcome)

    def _close(self, command: CloseAccount) -> Decision:
        """Close an account that holds nothing, owes nothing and has no transfer in flight
        out of it (a refused transfer's refund must find it open)."""
        account, refusal = self._existing(command.customer, command.account)
        if account is None:
            return refusal
        if account.balance != 0:
            return Decision(Reason.BALANCE_NOT_ZERO, f"account {account.key} holds money")
        flights = self.book.out_in_flight.get(account.key, 0)
        if flights:
            detail = f"account {account.key} has {flights} transfers in flight; retry later"
            return Decision(Reason.TRANSFERS_IN_FLIGHT, detail)
        barred = self.credit.refuses_close(account)
        if barred is not None:
            return barred
        account.status = AccountStatus.CLOSED
        return Decision(Reason.NONE, "", (account,))

    def _set_credit_limit(self, command: SetCreditLimit) -> Decision:
        """The risk authority's grant (its signature is checked before the ledger sees
        it): never below what the account owes already and holds, so no balance sits
        below ``-credit_limit`` and every hold can still be paid."""
        account, refusal = self._existing(command.customer, command.account)
        if account is None:
            return refusal
        held = self.book.held.get(account.key, 0)
        if account.balance - held < -command.credit_limit:
            detail = f"account {account.key} owes {-account.balance} and holds {held},"
            detail += " over the new limit"
            return Decision(Reason.CREDIT_IN_USE, detail)
        account.credit_limit = command.credit_limit
        return Decision(Reason.NONE, "", (account,))

    def _set_status(self, customer: int, number: int, status: AccountStatus) -> Decision:
        """Freeze or unfreeze (closing is ``_close``)."""
        invariant(status is not AccountStatus.CLOSED, "accounts close through _close")
        account, refusal = self._existing(customer, number)
        if account is None:
            return refusal
        account.status = status
        return Decision(Reason.NONE, "", (account,))

    def _existing(
        self, customer: int, number: int
    ) -> tuple[Account, Decision] | tuple[None, Decision]:
        """An account that exists and is not closed, or the refusal saying why not."""
        account = self.book.accounts.get((customer, number))
        if account is None:
            return None, Decision(
                Reason.ACCOUNT_NOT_FOUND, f"account {(customer, number)} not found"
            )
        if account.status is AccountStatus.CLOSED:
            return None, Decision(Reason.ACCOUNT_CLOSED, f"account {account.key} is closed")
        return account, MOVABLE
