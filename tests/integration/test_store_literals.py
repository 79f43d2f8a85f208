"""The commit statement's array literals survive Postgres's parser unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import ClearingKind, CreditKind
from engine.core.config import Config
from shards.control import connect
from shards.postgres.store import ints_literal, texts_literal

pytestmark = pytest.mark.integration

TEXTS = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
)
"""Any text Postgres can hold: UTF-8 (no lone surrogates) without NUL."""
INTS = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1))


@pytest.mark.parametrize(
    "values",
    [[], ["NULL"], [""], ['a"b', "c\\d", "x,y", "{z}", " sp ", "q'uote", "ünï", "a/credit"]],
)
async def test_text_literals_round_trip(stack: Config, values: list[str]) -> None:
    connection = await connect(stack.stack.control_dsn, stack.shards)
    try:
        assert await connection.fetchval("SELECT $1::text::text[]", texts_literal(values)) == values
    finally:
        await connection.close()


async def test_booleans_and_enums_go_as_integer_literals(stack: Config) -> None:
    """Booleans (``{true,false}``) and enum members (their numbers), as the commit sends a
    credit row's ``is_open`` and ``kind`` and a clearing entry's ``kind``."""
    connection = await connect(stack.stack.control_dsn, stack.shards)
    try:
        flags = [True, False]
        kinds = [*CreditKind, *ClearingKind]
        assert await connection.fetchval("SELECT $1::text::boolean[]", ints_literal(flags)) == flags
        assert await connection.fetchval("SELECT $1::text::smallint[]", ints_literal(kinds)) == [
            1, 2, 3, 4, 5, 1, 2, 3, 4
        ]  # fmt: skip
    finally:
        await connection.close()


async def test_random_literals_round_trip(stack: Config) -> None:
    """Hypothesis draws the lists; one connection answers them all (bounded: 200 examples)."""
    connection = await connect(stack.stack.control_dsn, stack.shards)
    drawn: list[tuple[list[str], list[int]]] = []

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(TEXTS, INTS)
    def collect(texts: list[str], ints: list[int]) -> None:
        drawn.append((texts, ints))

    collect()
    try:
        for texts, ints in drawn:
            text_array = await connection.fetchval("SELECT $1::text::text[]", texts_literal(texts))
            int_array = await connection.fetchval("SELECT $1::text::bigint[]", ints_literal(ints))
            assert (text_array, int_array) == (texts, ints)
    finally:
        await connection.close()
