"""Integration fixtures: the real local stack, started once per session and left running."""

from __future__ import annotations

import pytest

from deploy.local.config import local_config
from deploy.local.stack import stack_up
from engine.core.config import Config, load_config


@pytest.fixture(scope="session")
def stack() -> Config:
    """Bring the local stack up (or reuse the running one); the local stack's Config.

    Only the ``[stack]`` section is read from the environment: whatever else
    SMALLCUPS_CONFIG names, the tests run on the local stack. The stack stays up after
    the session, so the next run starts in under a second. A stack that cannot start
    fails the tests that need it: nothing is skipped.
    """
    stack = load_config().stack
    status = stack_up(stack)
    assert status.healthy, status
    return local_config(stack)
