"""One translation of a database driver's exceptions into the project's, for both stores:
a fault that passes is CupUnavailableError, any other database error InvariantError (a
bug), so a driver's exception never crosses the CupStore protocol."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from engine.core.errors import CupUnavailableError, InvariantError


class _Cup(Protocol):
    @property
    def cup_id(self) -> int: ...


S = TypeVar("S", bound=_Cup)
P = ParamSpec("P")
T = TypeVar("T")
Method = Callable[Concatenate[S, P], Coroutine[Any, Any, T]]


def cup_faults(
    passing: Callable[[BaseException], bool], database_errors: tuple[type[BaseException], ...]
) -> Callable[[Method[S, P, T]], Method[S, P, T]]:
    """Decorate a store's methods: ``passing`` says which exceptions are faults that pass;
    ``database_errors`` are the driver's others (a bug)."""

    def decorate(method: Method[S, P, T]) -> Method[S, P, T]:
        @functools.wraps(method)
        async def translated(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(store, *args, **kwargs)
            except Exception as error:
                detail = f"cup {store.cup_id}: {type(error).__name__}: {error}"
                if passing(error):
                    raise CupUnavailableError(detail) from error
                if isinstance(error, database_errors):
                    raise InvariantError(detail) from error
                raise

        return translated

    return decorate
