"""Decoding is a total function: whatever the bytes, a command, an answer or a dead letter.

Commands, in stages, so that bad input still gets a precise answer:

1. the strict decoder (one reused msgspec Decoder): a known ``type``, known fields of the
   right types. Every field of a command is a scalar, so it never recurses into a value;
   a map with a key twice (``amount: 5, amount: 999``) is caught by counting its keys,
   because a gateway that read the first one and the engine the last would disagree;
2. failing that, the record's shape is checked without recursion (engine.core.record_shape:
   nesting, element counts, duplicate keys) before anything recursive reads it, then an
   envelope decoder finds ``id`` and ``customer``: the command is answered with a
   rejected result (an ``Invalid``) naming the problem;
3. failing that too (random bytes, too deep, no valid id to answer), the record goes to
   the DLQ.
   So does anything tagged as a leg that is not a well-formed leg: only workers make
   legs (engine.core.authority), so a malformed one is forged, and answering it would publish
   a result for an id no client used.

Results (``decode_result``) are decoded the same way by their readers: the client and
``reconcile`` skip and count what is not a well-formed result, and never die of it.
Details quote at most ``ECHO_LENGTH_MAX`` characters of what they refuse.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Final

import msgspec

from engine.core.messages import (
    ACCOUNT_MAX,
    AMOUNT_MAX,
    BALANCE_MAX,
    BALANCE_MIN,
    BASIS_POINTS,
    COMMAND_ID_LENGTH_MAX,
    COMMAND_TYPES,
    CONTENT_TYPE_HEADER,
    CREDIT_LIMIT_MAX,
    CURRENCIES,
    CUSTOMER_MAX,
    DETAIL_LENGTH_MAX,
    ECHO_LENGTH_MAX,
    FORWARDED_FROM_HEADER,
    FUNDING_ACCOUNT_LENGTH_MAX,
    JSON_CONTENT_TYPE,
    KEY_ID_LENGTH_MAX,
    LEG_TYPES,
    OFFSET_MAX,
    PARTNER_MAX,
    PARTNER_NAME_LENGTH_MAX,
    PRIVILEGED_TYPES,
    RATE_BP_MAX,
    SIGNATURE_BYTES_MAX,
    TERM_DAYS_MAX,
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
    Leg,
    OpenAccount,
    PostHold,
    Privileged,
    Reason,
    RegisterPartner,
    Repay,
    Result,
    SetCreditLimit,
    SettleLeg,
    Transfer,
    Undecodable,
    UnfreezeAccount,
    VoidHold,
    Withdraw,
    credit_leg_id,
    settle_leg_id,
    type_tag,
)
from engine.core.record_shape import json_shape, msgpack_shape

_COMMAND_ID: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PARTNER_NAME: Final = re.compile(rf"[A-Za-z0-9 .,&()'\-]{{1,{PARTNER_NAME_LENGTH_MAX}}}")
_FUNDING_ACCOUNT: Final = re.compile(rf"[A-Z0-9]{{1,{FUNDING_ACCOUNT_LENGTH_MAX}}}")
_KEY_ID: Final = re.compile(rf"[A-Za-z0-9_.\-]{{0,{KEY_ID_LENGTH_MAX}}}")
BALANCES_PER_RESULT_MAX: Final = 2
PARTITION_DIGITS_MAX: Final = 5
_LEG_TAGS: Final = frozenset(type_tag(t) for t in LEG_TYPES)
_TAGS: Final = frozenset(type_tag(t) for t in COMMAND_TYPES)
_REASONS: Final = frozenset(reason.value for reason in Reason)
_ADDRESSING_KEYS: Final = frozenset({"id", "customer"})
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8,
and RecursionError for nesting past the interpreter's limit (the shape check stops that
before any recursive decoding, this is the second line)."""


class _Envelope(msgspec.Struct, frozen=True):
    """The least of a command we need to address a rejection to its sender."""

    id: str
    customer: int
    type: str = ""


_strict_msgpack = msgspec.msgpack.Decoder(Command)
_strict_json = msgspec.json.Decoder(Command)
_envelope_msgpack = msgspec.msgpack.Decoder(_Envelope)
_envelope_json = msgspec.json.Decoder(_Envelope)
_untyped_msgpack = msgspec.msgpack.Decoder()
_result_decoder = msgspec.msgpack.Decoder(Result)
_result_json = msgspec.json.Decoder(Result)


def decode_command(data: bytes, *, json: bool | None = None) -> Command | Invalid | Undecodable:
    """Decode and validate one command; never raises, whatever ``data`` holds.

    ``json``: whether ``data`` is JSON (None: JSON when it starts with ``{``, which no
    msgpack map does). Proofs (leg MACs, risk signatures) are checked by
    ``engine.core.authority`` afterwards."""
    if json is None:
        json = looks_like_json(data)
    if json:
        shape = json_shape(data)
        if shape.problem or shape.duplicate_keys:
            return _explain(data, shape.problem or "duplicate keys", json=True)
    try:
        command: Command = (_strict_json if json else _strict_msgpack).decode(data)
    except _DECODE_ERRORS as error:
        return _explain(data, str(error), json=json)
    if not json and _has_duplicate_keys(data):
        return _explain(data, "duplicate keys", json=False)
    if isinstance(command, LEG_TYPES):
        problem = leg_problem(command)
        if problem:
            return Undecodable("forged_leg", problem, type_tag(type(command)))
        return command
    if not _COMMAND_ID.fullmatch(command.id):
        return _bad_id(command.id)
    reason, detail = validate(command)
    if reason is not Reason.NONE:
        return Invalid(command.id, command.customer, reason, detail)
    return command


def looks_like_json(data: bytes) -> bool:
    """A JSON object starts with ``{`` (after blanks); a msgpack map never does."""
    return data[:1] == b"{" or data.lstrip(b" \t\r\n")[:1] == b"{"


def says_json(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a record's headers say its value is JSON (``content-type``)."""
    return any(
        name == CONTENT_TYPE_HEADER and value == JSON_CONTENT_TYPE for name, value in headers
    )


def forwarded_partition(headers: Sequence[tuple[str, bytes]], partitions: int) -> int:
    """The partition a worker forwarded the record from, by its header (-1: none, or
    not a partition). A producer can set the header too; it gains nothing: the record is
    then never forwarded, only answered where it belongs."""
    for name, value in headers:
        if name == FORWARDED_FROM_HEADER and value.isdigit() and len(value) <= PARTITION_DIGITS_MAX:
            partition = int(value)
            return partition if partition < partitions else -1
    return -1


def _has_duplicate_keys(data: bytes) -> bool:
    """Whether the top-level map names a key twice: its header counts more entries than
    the keys it decodes to. Safe here: the strict decode proved every value a scalar."""
    first = data[0]
    if 0x80 <= first <= 0x8F:
        entries = first & 0x0F
    elif first == 0xDE:
        entries = int.from_bytes(data[1:3], "big")
    else:
        entries = int.from_bytes(data[1:5], "big")
    decoded: dict[str, object] = _untyped_msgpack.decode(data)
    return entries != len(decoded)


def _explain(data: bytes, error: str, *, json: bool) -> Invalid | Undecodable:
    """Why a record is not a command, addressed to its sender when it can be."""
    if not json and not _is_msgpack_map(data):
        kind = f"first byte 0x{data[0]:02x}" if data else "no bytes"
        return Undecodable("undecodable", f"neither a msgpack map nor a JSON object ({kind})")
    shape = json_shape(data) if json else msgpack_shape(data)
    if shape.problem:
        return Undecodable("undecodable", _cut(shape.problem))
    try:
        envelope = (_envelope_json if json else _envelope_msgpack).decode(data)
    except _DECODE_ERRORS:
        return Undecodable("undecodable", _cut(error))
    duplicates = shape.duplicate_keys
    if envelope.type in _LEG_TAGS:
        return Undecodable("forged_leg", _cut(f"malformed leg: {error}"), envelope.type)
    if _ADDRESSING_KEYS & set(duplicates):
        return Undecodable("undecodable", _cut(f"duplicate keys {list(duplicates)}"))
    if not _COMMAND_ID.fullmatch(envelope.id):
        return _bad_id(envelope.id)
    if not 1 <= envelope.customer <= CUSTOMER_MAX:
        return Undecodable("bad_customer_id", f"customer {envelope.customer} is not valid")
    if duplicates:
        reason, error = Reason.DUPLICATE_FIELD, f"keys named more than once: {list(duplicates)}"
    elif envelope.type not in _TAGS:
        reason = Reason.UNKNOWN_COMMAND_TYPE
    elif "unknown field" in error:
        reason = Reason.UNKNOWN_FIELD
    else:
        reason = Reason.INVALID_FIELD
    return Invalid(envelope.id, envelope.customer, reason, _cut(error))


def _bad_id(command_id: str) -> Undecodable:
    """A command whose id is not valid cannot be answered: no client could match a
    result to it (and a result must not echo a 30,000-character id)."""
    echo = command_id[:ECHO_LENGTH_MAX]
    return Undecodable("bad_command_id", f"command id {echo!r} is not 1..64 of [A-Za-z0-9_.:-]")


def _is_msgpack_map(data: bytes) -> bool:
    return bool(data) and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))


def _cut(text: str) -> str:
    return text[:DETAIL_LENGTH_MAX]


def validate(command: Command) -> tuple[Reason, str]:
    """Check a decoded client or privileged command's values; (Reason.NONE, "") if valid.

    Its id was checked already (a bad one goes to the DLQ); legs are checked by
    ``leg_problem``."""
    customers = [command.customer]
    accounts = []
    if isinstance(command, _ACCOUNT_TYPES):
        accounts.append(command.account)
    if isinstance(command, Transfer | HoldFunds):
        customers.append(command.to_customer)
        accounts.append(command.to_account)
    for customer in customers:
        if not 1 <= customer <= CUSTOMER_MAX:
            return Reason.BAD_CUSTOMER_ID, f"customer {customer} is not in 1..2^63-1"
    for account in accounts:
        if not 1 <= account <= ACCOUNT_MAX:
            return Reason.BAD_ACCOUNT_NUMBER, f"account {account} is not in 1..2^31-1"
    reason, detail = _validate_values(command)
    if reason is Reason.NONE and isinstance(command, PRIVILEGED_TYPES):
        return _validate_proof_fields(command)
    return reason, detail


_ACCOUNT_TYPES: Final = (
    OpenAccount,
    Deposit,
    Withdraw,
    Transfer,
    FreezeAccount,
    CloseAccount,
    SetCreditLimit,
    UnfreezeAccount,
    GrantCreditLine,
    HoldFunds,
)
"""The commands that name one of the customer's accounts."""


def _validate_values(command: Command) -> tuple[Reason, str]:
    match command:
        case Deposit() | Withdraw() | Transfer() | Draw() | Repay():
            return _validate_amount(command.amount, command.currency)
        case OpenAccount():
            return _validate_currency(command.currency)
        case SetCreditLimit() if not 0 <= command.credit_limit <= CREDIT_LIMIT_MAX:
            return Reason.BAD_CREDIT_LIMIT, f"credit limit must be in 0..{CREDIT_LIMIT_MAX}"
        case GrantCreditLine():
            reason, detail = _validate_currency(command.currency)
            if reason is Reason.NONE:
                reason, detail = _validate_terms(command)
            if reason is Reason.NONE:
                reason, detail = _validate_funding(command)
            return reason, detail
        case RegisterPartner():
            reason, detail = _validate_currency(command.currency)
            if reason is Reason.NONE:
                reason, detail = _validate_partner(command)
            return reason, detail
        case ChangeCreditLine():
            return _validate_terms(command)
        case CloseBusinessDay():
            return _validate_date(command.date)
        case HoldFunds():
            reason, detail = _validate_amount(command.amount, command.currency)
            if reason is not Reason.NONE:
                return reason, detail
            return _validate_date(command.expires_on)
        case PostHold():
            if not 0 < command.amount <= AMOUNT_MAX:
                return Reason.AMOUNT_NOT_POSITIVE, f"amount must be in 1..{AMOUNT_MAX}"
            return _validate_hold_id(command.hold_id)
        case VoidHold():
            return _validate_hold_id(command.hold_id)
    return Reason.NONE, ""


def _validate_terms(command: GrantCreditLine | ChangeCreditLine) -> tuple[Reason, str]:
    """A credit line's terms: every figure in range, and no loan larger than the line."""
    if not 0 <= command.limit <= CREDIT_LIMIT_MAX:
        return Reason.BAD_CREDIT_LINE, f"limit must be in 0..{CREDIT_LIMIT_MAX}"
    if not (0 <= command.rate_bp <= RATE_BP_MAX and 0 <= command.overdue_rate_bp <= RATE_BP_MAX):
        return Reason.BAD_CREDIT_LINE, f"rates are basis points in 0..{RATE_BP_MAX}"
    if not 1 <= command.loan_max <= max(1, command.limit):
        return Reason.BAD_CREDIT_LINE, "loan_max must be in 1..limit"
    if not 1 <= command.term_days <= TERM_DAYS_MAX:
        return Reason.BAD_CREDIT_LINE, f"term_days must be in 1..{TERM_DAYS_MAX}"
    return Reason.NONE, ""


def _validate_funding(command: GrantCreditLine) -> tuple[Reason, str]:
    """A jointly funded line names a partner, a share of 1..10,000 basis points and a
    partner rate no higher than the line's; a line of its own funds names none."""
    if command.partner == 0:
        if command.partner_share_bp or command.partner_rate_bp:
            return Reason.BAD_PARTNER, "a share or a partner rate needs a partner"
        return Reason.NONE, ""
    if not 1 <= command.partner <= PARTNER_MAX:
        return Reason.BAD_PARTNER, f"partner must be in 1..{PARTNER_MAX}"
    if not 1 <= command.partner_share_bp <= BASIS_POINTS:
        return Reason.BAD_PARTNER, f"partner_share_bp must be in 1..{BASIS_POINTS}"
    if not 0 <= command.partner_rate_bp <= command.rate_bp:
        return Reason.BAD_PARTNER, "partner_rate_bp must be in 0..rate_bp"
    return Reason.NONE, ""


def _validate_partner(command: RegisterPartner) -> tuple[Reason, str]:
    if not 1 <= command.partner <= PARTNER_MAX:
        return Reason.BAD_PARTNER, f"partner must be in 1..{PARTNER_MAX}"
    if not _PARTNER_NAME.fullmatch(command.name):
        return Reason.BAD_PARTNER, f"a partner's name is 1..{PARTNER_NAME_LENGTH_MAX} printable"
    if not _FUNDING_ACCOUNT.fullmatch(command.funding_account):
        detail = f"a funding account is 1..{FUNDING_ACCOUNT_LENGTH_MAX} of [A-Z0-9]"
        return Reason.BAD_PARTNER, detail
    return Reason.NONE, ""


def parse_date(text: str) -> int | None:
    """The day number (``date.toordinal``) of a ``YYYY-MM-DD`` date, or None."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text).toordinal()
    except ValueError:
        return None


def _validate_date(text: str) -> tuple[Reason, str]:
    if parse_date(text) is None:
        return Reason.BAD_DATE, f"date {text[:ECHO_LENGTH_MAX]!r} is not YYYY-MM-DD"
    return Reason.NONE, ""


def _validate_hold_id(hold_id: str) -> tuple[Reason, str]:
    if not _COMMAND_ID.fullmatch(hold_id):
        return Reason.HOLD_NOT_FOUND, f"hold id {hold_id[:ECHO_LENGTH_MAX]!r} is not a command id"
    return Reason.NONE, ""


def _validate_proof_fields(command: Privileged) -> tuple[Reason, str]:
    if not _KEY_ID.fullmatch(command.key_id) or len(command.signature) > SIGNATURE_BYTES_MAX:
        return Reason.BAD_SIGNATURE, "key_id is 0..32 of [A-Za-z0-9_.-], a signature 64 bytes"
    return Reason.NONE, ""


def leg_problem(leg: Leg) -> str:
    """Why ``leg`` is not a leg a worker could have made ("" when well-formed): every
    field in the range the engine writes."""
    expected = (
        credit_leg_id(leg.transfer_id, leg.from_customer)
        if isinstance(leg, CreditLeg)
        else settle_leg_id(leg.transfer_id)
    )
    if not _COMMAND_ID.fullmatch(leg.transfer_id) or leg.id != expected:
        return "a leg id is <transfer id>/credit/<payer> or <transfer id>/settle"
    counterpart = (
        (leg.from_customer, leg.from_account)
        if isinstance(leg, CreditLeg)
        else (leg.to_customer, leg.to_account)
    )
    for customer, account in ((leg.customer, leg.account), counterpart):
        if not 1 <= customer <= CUSTOMER_MAX or not 1 <= account <= ACCOUNT_MAX:
            return "a leg addresses real accounts"
    if not 0 <= leg.origin_offset <= OFFSET_MAX or not -1 <= leg.published_at_ms <= OFFSET_MAX:
        return "offset or time out of range"
    if not _KEY_ID.fullmatch(leg.key_id) or len(leg.mac) > SIGNATURE_BYTES_MAX:
        return "key_id is 0..32 of [A-Za-z0-9_.-], a MAC at most 64 bytes"
    if isinstance(leg, SettleLeg):
        if leg.reason not in _REASONS or len(leg.detail) > DETAIL_LENGTH_MAX:
            return f"unknown settle reason {leg.reason[:ECHO_LENGTH_MAX]!r} or detail too long"
        if not BALANCE_MIN <= leg.payee_balance <= BALANCE_MAX:
            return "payee balance out of range"
    reason, detail = _validate_amount(leg.amount, leg.currency)
    return detail if reason is not Reason.NONE else ""


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


def decode_result(data: bytes | None) -> Result | Undecodable:
    """A result record (msgpack or JSON), or why it is not one; never raises (a tombstone,
    random bytes, nesting past any limit, out-of-range fields)."""
    if data is None:
        return Undecodable("undecodable", "a tombstone: no value")
    try:
        json = looks_like_json(data)
        result = (_result_json if json else _result_decoder).decode(data)
    except _DECODE_ERRORS as error:
        return Undecodable("undecodable", _cut(str(error)))
    problem = _result_problem(result)
    if problem:
        return Undecodable("undecodable", problem)
    return result


def _result_problem(result: Result) -> str:
    if len(result.command_id) > COMMAND_ID_LENGTH_MAX or not result.command_id:
        return f"a result's command id is 1..{COMMAND_ID_LENGTH_MAX} characters"
    if len(result.detail) > DETAIL_LENGTH_MAX or len(result.balances) > BALANCES_PER_RESULT_MAX:
        return "a result's detail or balances are too long"
    if not -1 <= result.partition <= OFFSET_MAX or not -1 <= result.offset <= OFFSET_MAX:
        return "a result's partition or offset is out of range"
    for balance in result.balances:
        if not BALANCE_MIN <= balance.balance <= BALANCE_MAX:
            return "a result's balance is out of range"
    return ""
