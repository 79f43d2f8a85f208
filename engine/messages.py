"""The wire schema: commands in, results out, dead letters aside.

Commands are a tagged union of msgspec Structs (tag field ``type``), msgpack on the
wire and JSON at the command line. Schema evolution adds fields with defaults and
never reuses a tag. Money is an integer number of minor units (cents), never a float.

Decoding is two-staged so that bad input still gets a precise answer:

1. the strict decoder: a known ``type``, known fields of the right types;
2. failing that, an envelope decoder (``id`` and ``customer`` only): the command is
   answered with a rejected Result naming the problem;
3. failing that too (random bytes, no usable id), the record goes to the DLQ.
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import Final

import msgspec

AMOUNT_MAX: Final = 10**15
"""Largest amount of one command, in minor units (10 trillion dollars in cents)."""
BALANCE_MAX: Final = 2**63 - 1
BALANCE_MIN: Final = -(2**63)
CUSTOMER_MAX: Final = 2**63 - 1
ACCOUNT_MAX: Final = 2**31 - 1
COMMAND_ID_LENGTH_MAX: Final = 64
CREDIT_LIMIT_MAX: Final = AMOUNT_MAX

_COMMAND_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

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
    BAD_CUSTOMER_ID = "bad_customer_id"
    BAD_ACCOUNT_NUMBER = "bad_account_number"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"
    BAD_CREDIT_LIMIT = "bad_credit_limit"
    UNKNOWN_CURRENCY = "unknown_currency"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_COMMAND_TYPE = "unknown_command_type"
    INVALID_FIELD = "invalid_field"
    WRONG_PARTITION = "wrong_partition"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    ACCOUNT_EXISTS = "account_exists"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    BALANCE_NOT_ZERO = "balance_not_zero"
    CURRENCY_MISMATCH = "currency_mismatch"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    OVERFLOW = "overflow"
    SAME_ACCOUNT = "same_account"


INPUT_REASONS: Final = frozenset(
    {
        Reason.BAD_COMMAND_ID,
        Reason.BAD_CUSTOMER_ID,
        Reason.BAD_ACCOUNT_NUMBER,
        Reason.AMOUNT_NOT_POSITIVE,
        Reason.AMOUNT_TOO_LARGE,
        Reason.BAD_CREDIT_LIMIT,
        Reason.UNKNOWN_CURRENCY,
        Reason.UNKNOWN_FIELD,
        Reason.UNKNOWN_COMMAND_TYPE,
        Reason.INVALID_FIELD,
    }
)
"""Reasons decided from the record alone (an Invalid). Such a rejection is not recorded as
the command id's result, so the same bad record sent twice is answered twice, by results
that differ only in their offset and times."""


class Status(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PENDING = "pending"
    """A cross-partition transfer whose credit leg is in flight: recorded, never published."""


class _Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Fields every command has: the idempotency key and the routing customer."""

    id: str
    customer: int


class OpenAccount(_Command, frozen=True, tag="open_account"):
    account: int
    currency: str
    credit_limit: int = 0


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


class CreditLeg(_Command, frozen=True, tag="credit_leg"):
    """Internal: the credit side of a cross-partition transfer, sent by the payer's worker.

    ``id`` is ``<transfer id>/credit``; ``customer``/``account`` is the payee.
    """

    transfer_id: str
    account: int
    amount: int
    currency: str
    from_customer: int
    from_account: int
    origin_offset: int
    published_at_ms: int


class SettleLeg(_Command, frozen=True, tag="settle_leg"):
    """Internal: the payee side's answer to a credit leg, back to the payer's partition.

    ``id`` is ``<transfer id>/settle``; ``customer``/``account`` is the payer. When
    ``reason`` is empty the credit was applied (the payee now holds ``payee_balance``);
    otherwise the payer's partition refunds the amount from its clearing account.
    """

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


class FreezeAccount(_Command, frozen=True, tag="freeze_account"):
    account: int


class CloseAccount(_Command, frozen=True, tag="close_account"):
    account: int


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | Transfer
    | FreezeAccount
    | CloseAccount
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
    CreditLeg,
    SettleLeg,
)
LEG_TYPES: Final = (CreditLeg, SettleLeg)
CREDIT_SUFFIX: Final = "/credit"
SETTLE_SUFFIX: Final = "/settle"


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

    @property
    def accepted(self) -> bool:
        return self.status is Status.ACCEPTED


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter", tag_field="type"):
    """An input record nobody can answer, with where it came from and why."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class _Envelope(msgspec.Struct, frozen=True):
    """The least of a command we need to address a rejection to its sender."""

    id: str
    customer: int
    type: str = ""


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
)
"""Why a record went to the DLQ (the ``reason`` of a DeadLetter)."""


class Undecodable(msgspec.Struct, frozen=True):
    """A record that cannot be answered: it goes to the DLQ."""

    reason: str
    detail: str


_REASONS: Final = frozenset(reason.value for reason in Reason)
_TAGS: Final = frozenset(t.__struct_config__.tag for t in COMMAND_TYPES)
_strict_msgpack = msgspec.msgpack.Decoder(Command)
_strict_json = msgspec.json.Decoder(Command)
_envelope_msgpack = msgspec.msgpack.Decoder(_Envelope)
_envelope_json = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.msgpack.Encoder()
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError)
"""msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8."""
result_decoder: Final = msgspec.msgpack.Decoder(Result)
command_encoder: Final = _encoder


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_command(data: bytes, *, json: bool = False) -> Command | Invalid | Undecodable:
    """Decode and validate one command; never raises on bad input."""
    try:
        command: Command = (_strict_json if json else _strict_msgpack).decode(data)
    except _DECODE_ERRORS as error:
        return _explain(data, str(error), json=json)
    reason, detail = validate(command)
    if reason is not Reason.NONE:
        return Invalid(command.id, command.customer, reason, detail)
    return command


def _explain(data: bytes, error: str, *, json: bool) -> Invalid | Undecodable:
    try:
        envelope = (_envelope_json if json else _envelope_msgpack).decode(data)
    except _DECODE_ERRORS:
        return Undecodable("undecodable", error[:200])
    if not _COMMAND_ID.fullmatch(envelope.id):
        return Undecodable("bad_command_id", f"command id {envelope.id[:80]!r} is not valid")
    if not 1 <= envelope.customer <= CUSTOMER_MAX:
        return Undecodable("bad_customer_id", f"customer {envelope.customer} is not valid")
    if envelope.type not in _TAGS:
        reason = Reason.UNKNOWN_COMMAND_TYPE
    elif "unknown field" in error:
        reason = Reason.UNKNOWN_FIELD
    else:
        reason = Reason.INVALID_FIELD
    return Invalid(envelope.id, envelope.customer, reason, error[:200])


def validate(command: Command) -> tuple[Reason, str]:
    """Check a decoded command's values; returns (Reason.NONE, "") when it is valid."""
    if isinstance(command, LEG_TYPES):
        return _validate_leg(command)
    if not _COMMAND_ID.fullmatch(command.id):
        return Reason.BAD_COMMAND_ID, "command id must be 1..64 of [A-Za-z0-9_.:-]"
    customers = [command.customer]
    accounts = [command.account]
    if isinstance(command, Transfer):
        customers.append(command.to_customer)
        accounts.append(command.to_account)
    for customer in customers:
        if not 1 <= customer <= CUSTOMER_MAX:
            return Reason.BAD_CUSTOMER_ID, f"customer {customer} is not in 1..2^63-1"
    for account in accounts:
        if not 1 <= account <= ACCOUNT_MAX:
            return Reason.BAD_ACCOUNT_NUMBER, f"account {account} is not in 1..2^31-1"
    match command:
        case Deposit() | Withdraw() | Transfer():
            return _validate_amount(command.amount, command.currency)
        case OpenAccount():
            if not 0 <= command.credit_limit <= CREDIT_LIMIT_MAX:
                return Reason.BAD_CREDIT_LIMIT, f"credit limit must be in 0..{CREDIT_LIMIT_MAX}"
            return _validate_currency(command.currency)
    return Reason.NONE, ""


def _validate_leg(leg: CreditLeg | SettleLeg) -> tuple[Reason, str]:
    suffix = CREDIT_SUFFIX if isinstance(leg, CreditLeg) else SETTLE_SUFFIX
    if leg.id != leg.transfer_id + suffix or not _COMMAND_ID.fullmatch(leg.transfer_id):
        return Reason.BAD_COMMAND_ID, f"a leg id is <transfer id>{suffix}"
    if isinstance(leg, SettleLeg) and leg.reason not in _REASONS:
        return Reason.INVALID_FIELD, f"unknown settle reason {leg.reason[:40]!r}"
    if not 1 <= leg.customer <= CUSTOMER_MAX or not 1 <= leg.account <= ACCOUNT_MAX:
        return Reason.BAD_ACCOUNT_NUMBER, "a leg addresses a real account"
    return _validate_amount(leg.amount, leg.currency)


def _validate_amount(amount: int, currency: str) -> tuple[Reason, str]:
    if amount <= 0:
        return Reason.AMOUNT_NOT_POSITIVE, f"amount {amount} must be positive"
    if amount > AMOUNT_MAX:
        return Reason.AMOUNT_TOO_LARGE, f"amount {amount} exceeds {AMOUNT_MAX}"
    return _validate_currency(currency)


def _validate_currency(currency: str) -> tuple[Reason, str]:
    if currency not in CURRENCIES:
        return Reason.UNKNOWN_CURRENCY, f"currency {currency[:8]!r} is not supported"
    return Reason.NONE, ""


def fingerprint(command: Command) -> int:
    """A signed 64-bit digest of a command's content, to tell a replay from a conflict."""
    digest = hashlib.blake2b(_encoder.encode(command), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def customers_of(command: Command) -> tuple[int, ...]:
    if isinstance(command, Transfer):
        return (command.customer, command.to_customer)
    return (command.customer,)
