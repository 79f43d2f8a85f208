"""The wire schema: commands in, results out, dead letters aside.

Commands are a tagged union of msgspec Structs (tag field ``type``), msgpack or JSON on
the wire (the same command, the same idempotency fingerprint, whatever the encoding; the
result comes back in the command's encoding). Schema evolution adds fields with defaults
and never reuses a tag. Money is an integer number of minor units (cents), never a float.
docs/schema/ holds the JSON Schema of every message, generated from these types.

Who may send what (engine.core.authority checks it, engine.core.decoding applies it):

- client commands (open, deposit, withdraw, transfer, freeze, close): any producer
  allowed to write the command topic; the upstream app authenticates its customers;
- credit commands (``draw``, ``repay``) and holds (``hold``, ``post``, ``void``): client
  commands too, decided by engine.core.credit against the line the risk authority granted;
- privileged commands (``set_credit_limit``, ``unfreeze_account``, ``grant_credit_line``,
  ``change_credit_line``, ``suspend_credit_line``, ``close_business_day``): only the risk
  authority (and the scheduler, which holds its key), whose Ed25519 signature they carry;
- saga legs (``credit_leg``, ``settle_leg``): only the workers of this deployment, whose
  MAC they carry. A credit leg's id is ``<transfer id>/credit/<payer customer>`` (two
  customers of two partitions may use one transfer id, and their credit legs may meet in
  one payee partition), a settle leg's ``<transfer id>/settle`` (it goes back to the
  payer's partition, where the transfer id is unique). A client command id cannot
  contain ``/``, so client ids and leg ids never collide.

Decoding (engine.core.decoding) turns any bytes into a command, an ``Invalid`` (answered
with a rejected result) or an ``Undecodable`` (sent to the DLQ), and never raises.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Final, TypeVar

import msgspec

AMOUNT_MAX: Final = 10**15
"""Largest amount of one command, in minor units (10 trillion dollars in cents)."""
BALANCE_MAX: Final = 2**63 - 1
BALANCE_MIN: Final = -(2**63)
CUSTOMER_MAX: Final = 2**63 - 1
ACCOUNT_MAX: Final = 2**31 - 1
OFFSET_MAX: Final = 2**63 - 1
COMMAND_ID_LENGTH_MAX: Final = 64
CREDIT_LIMIT_MAX: Final = AMOUNT_MAX
RATE_BP_MAX: Final = 100_000
"""Highest annual interest rate of a credit line, in basis points (1,000% a year)."""
TERM_DAYS_MAX: Final = 3_650
"""Longest term of a loan, in days (ten years)."""
BASIS_POINTS: Final = 10_000
"""A whole share: 10,000 basis points."""
PARTNER_MAX: Final = 9_999
"""Largest partner number (a partner bank funding credit lines jointly)."""
PARTNER_NAME_LENGTH_MAX: Final = 64
FUNDING_ACCOUNT_LENGTH_MAX: Final = 34
"""Longest funding account reference of a partner (an IBAN's length)."""
DETAIL_LENGTH_MAX: Final = 200
"""Longest ``detail`` of a result, a dead letter or a settle leg (characters)."""
ECHO_LENGTH_MAX: Final = 80
"""Longest prefix of a bad id or value quoted back in a detail."""
KEY_ID_LENGTH_MAX: Final = 32
SIGNATURE_BYTES_MAX: Final = 64

CURRENCIES: Final = frozenset(
    [
        "AED",
        "AUD",
        "BRL",
        "CAD",
        "CHF",
        "CNY",
        "CZK",
        "DKK",
        "EUR",
        "GBP",
        "HKD",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JPY",
        "KRW",
        "MXN",
        "MYR",
        "NOK",
        "NZD",
        "PHP",
        "PLN",
        "RON",
        "SEK",
        "SGD",
        "THB",
        "TRY",
        "USD",
        "ZAR",
    ]
)


class Reason(enum.StrEnum):
    """Why a command was rejected. The values are the stable wire codes."""

    NONE = ""
    BAD_COMMAND_ID = "bad_command_id"
    """No longer in results: a command whose id is not valid goes to the DLQ."""
    BAD_CUSTOMER_ID = "bad_customer_id"
    BAD_ACCOUNT_NUMBER = "bad_account_number"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"
    BAD_CREDIT_LIMIT = "bad_credit_limit"
    UNKNOWN_CURRENCY = "unknown_currency"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_COMMAND_TYPE = "unknown_command_type"
    INVALID_FIELD = "invalid_field"
    DUPLICATE_FIELD = "duplicate_field"
    NOT_SIGNED = "not_signed"
    BAD_SIGNATURE = "bad_signature"
    MISROUTED = "misrouted"
    """A privileged command on the commands topic, or a client command on the internal
    topic: each kind is taken from its own topic only (a leg off its topic is dead-lettered
    with this reason)."""
    WRONG_PARTITION = "wrong_partition"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    ACCOUNT_EXISTS = "account_exists"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    BALANCE_NOT_ZERO = "balance_not_zero"
    TRANSFERS_IN_FLIGHT = "transfers_in_flight"
    TOO_MANY_IN_FLIGHT = "too_many_in_flight"
    CREDIT_IN_USE = "credit_in_use"
    CURRENCY_MISMATCH = "currency_mismatch"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    OVERFLOW = "overflow"
    SAME_ACCOUNT = "same_account"
    BAD_CREDIT_LINE = "bad_credit_line"
    """A credit line's terms out of range (limit, rates, per-loan maximum, term)."""
    BAD_DATE = "bad_date"
    """A date that is not ``YYYY-MM-DD``, or out of the range the command allows."""
    NO_CREDIT_LINE = "no_credit_line"
    CREDIT_LINE_EXISTS = "credit_line_exists"
    CREDIT_LINE_SUSPENDED = "credit_line_suspended"
    CREDIT_LIMIT_EXCEEDED = "credit_limit_exceeded"
    LOAN_TOO_LARGE = "loan_too_large"
    LOAN_OVERDUE = "loan_overdue"
    TOO_MANY_LOANS = "too_many_loans"
    NOTHING_OWED = "nothing_owed"
    NO_BUSINESS_DATE = "no_business_date"
    DAY_ALREADY_CLOSED = "day_already_closed"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_EXCEEDED = "hold_exceeded"
    TOO_MANY_HOLDS = "too_many_holds"
    HOLDS_OPEN = "holds_open"
    BAD_PARTNER = "bad_partner"
    """A partner number, name, funding account or share out of range."""
    PARTNER_NOT_FOUND = "partner_not_found"
    PARTNER_EXISTS = "partner_exists"
    PARTNER_TERMS = "partner_terms"
    """A partner's currency other than the line's, or a line rate below its partner's."""
    ID_EXPIRED = "id_expired"
    """A command issued before its partition's idempotency window: its record may be gone,
    so it is never applied (a re-send of a command applied long ago, or a command held back
    longer than the window). Not recorded."""
    ISSUED_AT = "issued_at"
    """``issued_at_ms`` missing, or further in the future than the clock skew allowed."""
    FORGED_LEG = "forged_leg"
    """Never in a published result: a forged leg goes to the DLQ with this reason."""


INPUT_REASONS: Final = frozenset(
    {
        Reason.BAD_COMMAND_ID,
        Reason.BAD_CUSTOMER_ID,
        Reason.BAD_ACCOUNT_NUMBER,
        Reason.AMOUNT_NOT_POSITIVE,
        Reason.AMOUNT_TOO_LARGE,
        Reason.BAD_CREDIT_LIMIT,
        Reason.BAD_CREDIT_LINE,
        Reason.BAD_DATE,
        Reason.BAD_PARTNER,
        Reason.UNKNOWN_CURRENCY,
        Reason.UNKNOWN_FIELD,
        Reason.UNKNOWN_COMMAND_TYPE,
        Reason.INVALID_FIELD,
        Reason.DUPLICATE_FIELD,
        Reason.NOT_SIGNED,
        Reason.BAD_SIGNATURE,
        Reason.MISROUTED,
    }
)
"""Reasons decided from the record alone (an Invalid). Such a rejection is not recorded as
the command id's result, so the same bad record sent twice is answered twice, by results
that differ only in their offset and times, and a forged or unsigned command never takes
the id of the real one."""


class Status(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PENDING = "pending"
    """A cross-partition transfer whose credit leg is in flight: recorded, never published."""


class _Issued(msgspec.Struct, frozen=True, kw_only=True):
    """When a command was first issued: it bounds how long its idempotency key is kept.

    Keyword-only, so that it comes after every command's own fields (it has a default)."""

    issued_at_ms: int = 0
    """Milliseconds since the Unix epoch at which the sender first issued the command; the
    same on every re-send (stamp it once and keep it with the command). A worker keeps a
    command's idempotency record for the configured window after this time, answers a
    command issued before its partition's window with ``id_expired`` and never applies it
    (docs/messages.md, "Idempotency window"). Required on the wire; 0 only reaches the
    ledger from inside the engine (legs, tests), which counts from the record's time."""


class _Command(_Issued, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Fields every command has: the idempotency key and the routing customer, and when the
    command was issued."""

    id: str
    customer: int


class OpenAccount(_Command, frozen=True, tag="open_account"):
    """Open an account with no credit: a credit limit is granted only by the risk
    authority (``set_credit_limit``)."""

    account: int
    currency: str


class Deposit(_Command, frozen=True, tag="deposit"):
    account: int
    amount: int
    currency: str


class Withdraw(_Command, frozen=True, tag="withdraw"):
    account: int
    amount: int
    currency: str


class Transfer(_Command, frozen=True, tag="transfer"):
    """Move ``amount`` from (customer, account) to (to_customer, to_account)."""

    account: int
    to_customer: int
    to_account: int
    amount: int
    currency: str


class FreezeAccount(_Command, frozen=True, tag="freeze_account"):
    account: int


class CloseAccount(_Command, frozen=True, tag="close_account"):
    account: int


class SetCreditLimit(_Command, frozen=True, tag="set_credit_limit"):
    """Privileged: let the account's balance go down to ``-credit_limit``.

    ``signature`` is the risk authority's Ed25519 signature (engine.core.authority) made with
    its key ``key_id``; unsigned or wrongly signed, the command is rejected."""

    account: int
    credit_limit: int
    key_id: str = ""
    signature: bytes = b""


class UnfreezeAccount(_Command, frozen=True, tag="unfreeze_account"):
    """Privileged: open a frozen account again (signed like ``set_credit_limit``)."""

    account: int
    key_id: str = ""
    signature: bytes = b""


class GrantCreditLine(_Command, frozen=True, tag="grant_credit_line"):
    """Privileged (signed like ``set_credit_limit``): open the customer's revolving credit
    line, disbursed to and repaid from ``account`` (its currency is the line's).

    ``limit``: the most principal open at once; ``rate_bp`` and ``overdue_rate_bp``: the
    annual interest rates in basis points (Actual/365); ``loan_max``: the largest single
    draw; ``term_days``: each loan is due that many days after the day it was drawn.

    Joint lending (docs/lending.md): ``partner`` (0: none) funds ``partner_share_bp`` of
    every draw and earns ``partner_rate_bp`` (at most ``rate_bp``) on its share; the
    originator keeps the rest of the interest (its own share's, and the spread)."""

    account: int
    currency: str
    limit: int
    rate_bp: int
    overdue_rate_bp: int
    loan_max: int
    term_days: int
    key_id: str = ""
    signature: bytes = b""
    partner: int = 0
    partner_share_bp: int = 0
    partner_rate_bp: int = 0


class ChangeCreditLine(_Command, frozen=True, tag="change_credit_line"):
    """Privileged: new terms for the customer's line. Rates apply from the next business
    day to every open loan, the term to loans drawn after; a limit below the principal
    open now is refused (``credit_in_use``)."""

    limit: int
    rate_bp: int
    overdue_rate_bp: int
    loan_max: int
    term_days: int
    key_id: str = ""
    signature: bytes = b""


class SuspendCreditLine(_Command, frozen=True, tag="suspend_credit_line"):
    """Privileged: no new draws on the customer's line (``suspended`` false lifts it).
    Repayments and interest go on."""

    suspended: bool = True
    key_id: str = ""
    signature: bytes = b""


class CloseBusinessDay(_Command, frozen=True, tag="close_business_day"):
    """Privileged (the scheduler signs it with the risk key): close business day ``date``
    (``YYYY-MM-DD``) in the partition of ``customer`` (a routing customer: the command is
    about the partition, not about that customer), and every day before it not closed
    yet, in order: interest accrues, loans past due become overdue, expired holds are
    released. The first close a partition sees starts its calendar."""

    date: str
    key_id: str = ""
    signature: bytes = b""


class RegisterPartner(_Command, frozen=True, tag="register_partner"):
    """Privileged: make partner bank ``partner`` known to the partition of ``customer`` (a
    routing customer; ``smallcups clearing register-partner`` sends one to every
    partition): its name, the currency it settles in and its funding account (the
    reference its clearing statements carry)."""

    partner: int
    name: str
    currency: str
    funding_account: str
    key_id: str = ""
    signature: bytes = b""


class Draw(_Command, frozen=True, tag="draw"):
    """Borrow ``amount`` on the customer's credit line: a new loan, disbursed to the line's
    account. Its id is the loan's id."""

    amount: int
    currency: str


class Repay(_Command, frozen=True, tag="repay"):
    """Pay ``amount`` (at most what is owed: the rest stays) from the line's account:
    interest first, then principal, oldest loan first. No penalty for paying early."""

    amount: int
    currency: str


class HoldFunds(_Command, frozen=True, tag="hold"):
    """Reserve ``amount`` of ``account`` for a payment to (to_customer, to_account): the
    available balance drops, the balance does not, until ``post``, ``void`` or the close
    of business day ``expires_on`` (``YYYY-MM-DD``). Its id is the hold's id."""

    account: int
    to_customer: int
    to_account: int
    amount: int
    currency: str
    expires_on: str


class PostHold(_Command, frozen=True, tag="post"):
    """Capture ``amount`` (at most the hold's) of hold ``hold_id``: it is paid to the
    hold's payee like a transfer (a saga when the payee lives in another partition) and
    the rest of the hold is released."""

    hold_id: str
    amount: int


class VoidHold(_Command, frozen=True, tag="void"):
    """Release hold ``hold_id`` without paying anything."""

    hold_id: str


class CreditLeg(_Command, frozen=True, tag="credit_leg"):
    """Internal: the credit side of a cross-partition transfer, sent by the payer's worker.

    ``id`` is ``credit_leg_id(transfer id, payer)``; ``customer``/``account`` is the payee;
    ``from_customer``/``from_account`` is the payer. ``mac`` is
    the workers' MAC (engine.core.authority) with their key ``key_id``."""

    transfer_id: str
    account: int
    amount: int
    currency: str
    from_customer: int
    from_account: int
    origin_offset: int
    published_at_ms: int
    key_id: str = ""
    mac: bytes = b""


class SettleLeg(_Command, frozen=True, tag="settle_leg"):
    """Internal: the payee side's answer to a credit leg, back to the payer's partition.

    ``id`` is ``<transfer id>/settle``; ``customer``/``account`` is the payer. When
    ``reason`` is empty the credit was applied (the payee now holds ``payee_balance``);
    otherwise the payer's partition refunds the amount from its clearing account. It is
    applied only if it matches the transfer in flight it settles, and carries a MAC like
    the credit leg."""

    transfer_id: str
    account: int
    amount: int
    currency: str
    to_customer: int
    to_account: int
    reason: str
    detail: str
    payee_balance: int
    origin_offset: int
    published_at_ms: int
    key_id: str = ""
    mac: bytes = b""


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | Transfer
    | FreezeAccount
    | CloseAccount
    | SetCreditLimit
    | UnfreezeAccount
    | GrantCreditLine
    | ChangeCreditLine
    | SuspendCreditLine
    | CloseBusinessDay
    | RegisterPartner
    | Draw
    | Repay
    | HoldFunds
    | PostHold
    | VoidHold
    | CreditLeg
    | SettleLeg
)
COMMAND_TYPES: Final = (
    OpenAccount,
    Deposit,
    Withdraw,
    Transfer,
    FreezeAccount,
    CloseAccount,
    SetCreditLimit,
    UnfreezeAccount,
    GrantCreditLine,
    ChangeCreditLine,
    SuspendCreditLine,
    CloseBusinessDay,
    RegisterPartner,
    Draw,
    Repay,
    HoldFunds,
    PostHold,
    VoidHold,
    CreditLeg,
    SettleLeg,
)
AnyCommand = TypeVar("AnyCommand", bound=_Command)
Leg = CreditLeg | SettleLeg
LEG_TYPES: Final = (CreditLeg, SettleLeg)
Privileged = (
    SetCreditLimit
    | UnfreezeAccount
    | GrantCreditLine
    | ChangeCreditLine
    | SuspendCreditLine
    | CloseBusinessDay
    | RegisterPartner
)
PRIVILEGED_TYPES: Final = (
    SetCreditLimit,
    UnfreezeAccount,
    GrantCreditLine,
    ChangeCreditLine,
    SuspendCreditLine,
    CloseBusinessDay,
    RegisterPartner,
)
CREDIT_SUFFIX: Final = "/credit"
SETTLE_SUFFIX: Final = "/settle"


def credit_leg_id(transfer_id: str, payer: int) -> str:
    """The id of a transfer's credit leg: unique in the payee's partition."""
    return f"{transfer_id}{CREDIT_SUFFIX}/{payer}"


def settle_leg_id(transfer_id: str) -> str:
    """The id of a transfer's settle leg: unique in the payer's partition."""
    return transfer_id + SETTLE_SUFFIX


class Balance(msgspec.Struct, frozen=True, array_like=True):
    customer: int
    account: int
    balance: int


class Result(msgspec.Struct, frozen=True, tag="result", tag_field="type"):
    """The one final answer to a command, published on ``<prefix>.results``."""

    command_id: str
    status: Status
    reason: Reason = Reason.NONE
    detail: str = ""
    balances: tuple[Balance, ...] = ()
    committed_at_us: int = 0
    published_at_ms: int = 0
    partition: int = -1
    offset: int = -1
    forwarded_from: int = -1
    """The partition the command was published to, when a worker forwarded it here (its
    producer's partitioner is not Kafka's murmur2 of the key); -1 when it was not."""

    @property
    def accepted(self) -> bool:
        return self.status is Status.ACCEPTED


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter", tag_field="type"):
    """An input record nobody can answer, with where it came from and why (always msgpack:
    ``value`` holds the record's bytes as they came)."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Invalid(msgspec.Struct, frozen=True):
    """A record that decoded far enough to be answered, but not far enough to run."""

    id: str
    customer: int
    reason: Reason
    detail: str


DEAD_LETTER_REASONS: Final = (
    "undecodable",
    "bad_command_id",
    "bad_customer_id",
    "message_too_large",
    "forged_leg",
)
"""Why a record went to the DLQ (the ``reason`` of a DeadLetter)."""


class Undecodable(msgspec.Struct, frozen=True):
    """A record that cannot be answered: it goes to the DLQ.

    ``leg`` names the leg type (``credit_leg``, ``settle_leg``) of a refused leg."""

    reason: str
    detail: str
    leg: str = ""


class Forwarded(msgspec.Struct, frozen=True, gc=False):
    """Internal, in a cup's outbox only: a command record published to the wrong partition,
    to publish again, as it came, to its customer's partition."""

    value: bytes
    timestamp_ms: int
    """The original record's timestamp, so latency counts from the first publish."""
    json: bool


FORWARDED_FROM_HEADER: Final = "smallcups-forwarded-from"
"""Header of a forwarded command record: the partition it was first published to."""
CONTENT_TYPE_HEADER: Final = "content-type"
JSON_CONTENT_TYPE: Final = b"application/json"
"""A record whose ``content-type`` header says this is JSON (a first byte ``{`` says so too:
no msgpack map starts with it)."""

_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
result_decoder: Final = msgspec.msgpack.Decoder(Result)
"""For results this engine wrote itself (a cup's rows); a results topic anyone could write
is read with engine.core.decoding.decode_result."""


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def encode_json(message: msgspec.Struct) -> bytes:
    return _json_encoder.encode(message)


def issued(command: AnyCommand, now_ms: int) -> AnyCommand:
    """``command`` with ``issued_at_ms`` set to ``now_ms`` when it names no issue time yet
    (what a sender does once, before the first send: a re-send keeps the first time)."""
    if command.issued_at_ms:
        return command
    return msgspec.structs.replace(command, issued_at_ms=now_ms)


def fingerprint(command: Command) -> int:
    """A signed 64-bit digest of a command's content, to tell a replay from a conflict."""
    digest = hashlib.blake2b(_encoder.encode(command), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def type_tag(kind: type[msgspec.Struct]) -> str:
    """The wire tag of a message class (``deposit``, ``credit_leg``, ...)."""
    return str(kind.__struct_config__.tag)
