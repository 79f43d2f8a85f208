"""What must agree between the results of one command id (reconcile's check 6)."""

from __future__ import annotations

from typing import Final

import msgspec

from engine.core.messages import INPUT_REASONS, Reason, Result, Status

NOTHING_CHANGED: Final = INPUT_REASONS | {
    Reason.WRONG_PARTITION,
    Reason.DUPLICATE_CONFLICT,
    Reason.ID_EXPIRED,
    Reason.ISSUED_AT,
}
"""Rejections that changed nothing and recorded nothing that a later record of the same
id could disagree with: ``duplicate_conflict`` and ``id_expired`` answer a record that
came after the id's command (other content; a window passed), whose own answer stands.
Each still answers its record: a record answered only so (its id's command before an
incremental run's checkpoint) is not unanswered."""
NOTHING_CHANGED_PREFIX: Final = b"nothing changed:"


def answer_of(result: Result) -> bytes:
    """What must agree between the results of one command id: all of a recorded result
    (re-sends are identical, whatever their encoding), only the reason of a rejection
    that changed nothing (a re-sent bad record is answered again, at another offset)."""
    if result.status is Status.REJECTED and result.reason in NOTHING_CHANGED:
        return NOTHING_CHANGED_PREFIX + result.reason.encode()
    return msgspec.msgpack.encode(result)
