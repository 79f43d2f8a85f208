"""Integration fixtures: the real local stack, started once per session and left running."""

from __future__ import annotations

import pytest

from deploy.local.stack import stack_up
from engine.core.config import Config, load_config


@pytest.fixture(scope="session")
def stack() -> Config:
    """Bring the local stack up (or reuse the running one); return the loaded Config.

    The stack stays up after the session, so the next run starts in under a second.
    A stack that cannot start fails the tests that need it: nothing is skipped.
    """
    config = load_config()
    status = stack_up(config.stack)
    assert status.healthy, status
    return config
