"""The JSON Schemas of docs/schema/, generated from the message types of engine.core.messages.

    python -m scripts.schema --write docs/schema   # write every schema
    python -m scripts.schema --check docs/schema   # exit 1 when one is stale

msgspec writes the structure (fields, types, the ``type`` tag and its discriminator);
this adds what the decoder checks on values (ranges, the id pattern, the currencies), so
a team generating types in Java, Go or TypeScript gets the same limits the engine
enforces. Legs are internal (only workers make them) and are not in the command schema.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.core.messages import (
    ACCOUNT_MAX,
    AMOUNT_MAX,
    BALANCE_MAX,
    BALANCE_MIN,
    BASIS_POINTS,
    COMMAND_ID_LENGTH_MAX,
    CREDIT_LIMIT_MAX,
    CURRENCIES,
    CUSTOMER_MAX,
    DETAIL_LENGTH_MAX,
    FUNDING_ACCOUNT_LENGTH_MAX,
    KEY_ID_LENGTH_MAX,
    OFFSET_MAX,
    PARTNER_MAX,
    PARTNER_NAME_LENGTH_MAX,
    RATE_BP_MAX,
    TERM_DAYS_MAX,
    ChangeCreditLine,
    CloseAccount,
    CloseBusinessDay,
    DeadLetter,
    Deposit,
    Draw,
    FreezeAccount,
    GrantCreditLine,
    HoldFunds,
    OpenAccount,
    PostHold,
    RegisterPartner,
    Repay,
    Result,
    SetCreditLimit,
    SuspendCreditLine,
    Transfer,
    UnfreezeAccount,
    VoidHold,
    Withdraw,
)

ClientCommand = (
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
)
"""What a producer may publish (legs are the workers' own)."""

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
CUSTOMER: Final = {"minimum": 1, "maximum": CUSTOMER_MAX}
ACCOUNT: Final = {"minimum": 1, "maximum": ACCOUNT_MAX}
LIMITS: Final[dict[str, dict[str, Any]]] = {
    "id": {"pattern": f"^[A-Za-z0-9_.:-]{{1,{COMMAND_ID_LENGTH_MAX}}}$"},
    "customer": CUSTOMER,
    "to_customer": CUSTOMER,
    "account": ACCOUNT,
    "to_account": ACCOUNT,
    "amount": {"minimum": 1, "maximum": AMOUNT_MAX},
    "credit_limit": {"minimum": 0, "maximum": CREDIT_LIMIT_MAX},
    "limit": {"minimum": 0, "maximum": CREDIT_LIMIT_MAX},
    "loan_max": {"minimum": 1, "maximum": CREDIT_LIMIT_MAX},
    "rate_bp": {"minimum": 0, "maximum": RATE_BP_MAX},
    "overdue_rate_bp": {"minimum": 0, "maximum": RATE_BP_MAX},
    "term_days": {"minimum": 1, "maximum": TERM_DAYS_MAX},
    "date": {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    "expires_on": {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    "hold_id": {"pattern": f"^[A-Za-z0-9_.:-]{{1,{COMMAND_ID_LENGTH_MAX}}}$"},
    "partner": {"minimum": 0, "maximum": PARTNER_MAX},
    "partner_share_bp": {"minimum": 0, "maximum": BASIS_POINTS},
    "partner_rate_bp": {"minimum": 0, "maximum": RATE_BP_MAX},
    "name": {"pattern": f"^[A-Za-z0-9 .,&()'-]{{1,{PARTNER_NAME_LENGTH_MAX}}}$"},
    "funding_account": {"pattern": f"^[A-Z0-9]{{1,{FUNDING_ACCOUNT_LENGTH_MAX}}}$"},
    "currency": {"enum": sorted(CURRENCIES)},
    "key_id": {"pattern": f"^[A-Za-z0-9_.-]{{0,{KEY_ID_LENGTH_MAX}}}$"},
    "command_id": {"minLength": 1, "maxLength": COMMAND_ID_LENGTH_MAX},
    "detail": {"maxLength": DETAIL_LENGTH_MAX},
    "balances": {"maxItems": 2},
    "partition": {"minimum": -1},
    "offset": {"minimum": -1, "maximum": OFFSET_MAX},
    "forwarded_from": {"minimum": -1},
}
"""Value limits by field name: the decoder's (engine.core.decoding), for the schema's readers."""
BALANCE_ITEMS: Final = {
    "prefixItems": [
        {"type": "integer", **CUSTOMER, "description": "customer"},
        {"type": "integer", **ACCOUNT, "description": "account"},
        {
            "type": "integer",
            "minimum": BALANCE_MIN,
            "maximum": BALANCE_MAX,
            "description": "balance after the command, in minor units",
        },
    ]
}


def schemas() -> dict[str, str]:
    """File name -> the schema's text, for every published message."""
    documents = {
        "command.schema.json": ("smallcups command", ClientCommand),
        "result.schema.json": ("smallcups result", Result),
        "dead_letter.schema.json": ("smallcups dead letter", DeadLetter),
    }
    texts = {}
    for name, (title, kind) in documents.items():
        schema = msgspec.json.schema(kind)
        _add_limits(schema)
        document = {"$schema": DRAFT, "title": title, **schema}
        encoded = msgspec.json.format(msgspec.json.encode(document), indent=2)
        texts[name] = encoded.decode() + "\n"
    return texts


def _add_limits(schema: dict[str, Any]) -> None:
    for definition in schema.get("$defs", {}).values():
        properties = definition.get("properties", {})
        for field, limits in LIMITS.items():
            if field in properties and "type" in properties[field]:
                properties[field].update(limits)
        if definition.get("title") == "Balance":
            definition.update(BALANCE_ITEMS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schema", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, help="write the schemas into this folder")
    action.add_argument("--check", type=Path, help="exit 1 when a schema there is stale")
    args = parser.parse_args(argv)
    folder: Path = args.write or args.check
    stale = []
    for name, text in schemas().items():
        path = folder / name
        if args.write:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if stale:
        print(f"{folder}: stale schemas {stale}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
