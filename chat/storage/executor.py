"""The typed seam between the use cases and the database: "run this prebuilt statement".

Both the ORM's :class:`~sqlalchemy.ext.asyncio.AsyncSession` (and its Core
connection) and the driver's own :class:`chat.storage.direct.DirectConnection`
satisfy :class:`Executor`: ``await executor.execute(statement, params)``
returns a result with ``all()``, ``one()``, ``scalar_one_or_none()`` and
``scalars()``.  A use case that only runs statements from
:mod:`chat.storage.queries` takes an ``Executor`` and works on either, so the
hot paths may run on the direct connection while the rest keeps the ORM.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession


class Result(Protocol):
    """What a statement's result offers (SQLAlchemy's ``Result`` and ``direct.Rows`` alike)."""

    def all(self) -> Sequence[Any]: ...

    def one(self) -> Any: ...

    def scalar_one_or_none(self) -> Any: ...

    def scalars(self) -> Any: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a prebuilt statement with its parameters (one mapping, or a list of them)."""

    async def execute(self, statement: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                      ) -> Result: ...


async def statements(executor: Executor) -> Executor:
    """The cheapest executor behind ``executor`` for plain rows: an ORM session's
    Core connection (no ORM row processing), any other executor as it is."""
    if isinstance(executor, AsyncSession):
        return await executor.connection()
    return executor
