"""Core statements executed straight on the DBAPI cursor: the index writes of the ingest path."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnDefault, Connection, Dialect, Select
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: bool
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # parameter and bind processor, in SQL order
    names: tuple[str, ...]  # the placeholders' names (named paramstyles)
    constants: dict[str, Any]  # values bound in the statement itself, e.g. `.values(stable=False)`
    defaults: tuple[tuple[str, Callable[[], Any] | None, Any], ...]  # column, callable or scalar default
    returning: bool  # the INSERT returns its primary key (else: cursor.lastrowid)
    row: Callable[..., Any] | None  # named tuple of a SELECT's columns


class Prepared:
    """A Core statement executed straight on the DBAPI cursor of a Connection, inside its transaction.

    `Connection.execute` spends 50-100 µs of Python per statement (cache lookup, parameter construction,
    execution context, result object): most of the CPU of recording a received instance. This compiles the
    statement once per dialect (and, for INSERT/UPDATE, per set of given columns, as SQLAlchemy's cache does)
    and replays what SQLAlchemy does: the same SQL text, its bind processors (SQLite stores DateTime as text),
    Python-side column defaults, RETURNING or lastrowid for the new primary key, and SQLAlchemy's handling
    of DBAPI errors. Engine events (before_cursor_execute, echo) do not see these statements.
    """

    def __init__(self, statement: Select[Any] | UpdateBase) -> None:
        self.statement = statement
        self._plans: WeakKeyDictionary[Dialect, dict[tuple[str, ...], _Plan]] = WeakKeyDictionary()

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        self._run(conn, params)[1].close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first row, as a named tuple of the selected columns, or None."""
        plan, cursor = self._run(conn, params)
        row = self._fetch(conn, plan, cursor)
        assert plan.row is not None
        return None if row is None else plan.row(*row)

    def insert(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """INSERT `values`; the new row's primary key."""
        plan, cursor = self._run(conn, values)
        if plan.returning:
            row = self._fetch(conn, plan, cursor)
            assert row is not None
            return int(row[0])
        key = cursor.lastrowid
        cursor.close()
        return int(key)

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> tuple[_Plan, DBAPICursor]:
        if not conn.in_transaction():
            conn.begin()  # what Connection.execute's autobegin does
        plans = self._plans.get(conn.dialect)
        if plans is None:
            plans = self._plans[conn.dialect] = {}
        # DML compiles per set of given columns (the columns it writes, the defaults it fills in).
        keys = tuple(params) if isinstance(self.statement, UpdateBase) else ()
        plan = plans.get(keys)
        if plan is None:
            plan = plans[keys] = self._plan(conn.dialect, keys)
        values = {**plan.constants, **params}
        for key, make, scalar in plan.defaults:  # in SQLAlchemy's order, each callable called once
            values[key] = make() if make is not None else scalar
        args = [values[k] if process is None else process(values[k]) for k, process in plan.binds]
        cursor = conn.connection.cursor()
        parameters = tuple(args) if plan.positional else dict(zip(plan.names, args, strict=True))
        try:
            cursor.execute(plan.sql, parameters)
        except BaseException as exc:
            # SQLAlchemy's own handling (a private method, unchanged since 1.4): the same exception classes
            # (IntegrityError drives the retries), invalidation on a disconnect, handle_error events.
            conn._handle_dbapi_exception(exc, plan.sql, parameters, cursor, None)
        return plan, cursor

    @staticmethod
    def _fetch(conn: Connection, plan: _Plan, cursor: DBAPICursor) -> Any:
        try:
            row = cursor.fetchone()
            cursor.close()
        except BaseException as exc:
            conn._handle_dbapi_exception(exc, plan.sql, None, cursor, None)
        return row

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
        compiled = self.statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        if compiled.escaped_bind_names or compiled.post_compile_params or compiled.literal_execute_params:
            raise NotImplementedError("escaped, expanding or literal parameters")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        if any(bind.callable is not None for bind in by_name.values()):
            raise NotImplementedError("callable bind values")
        names = tuple(compiled.positiontup or by_name)
        defaults = []
        prefetch = [(c, c.default) for c in compiled.insert_prefetch]
        for column, default in prefetch + [(c, c.onupdate) for c in compiled.update_prefetch]:
            # SQLAlchemy wraps a default that takes no context; one that wants the context is not replayed.
            if not isinstance(default, ColumnDefault):
                raise NotImplementedError(f"default of {column}")
            make = getattr(default.arg, "__wrapped__", None) if default.is_callable else None
            if not (default.is_scalar or make is not None):
                raise NotImplementedError(f"default of {column}")
            defaults.append((column.key, make, None if make else default.arg))
        columns = compiled.effective_returning or (
            self.statement.selected_columns if isinstance(self.statement, Select) else []
        )
        if any(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns):
            raise NotImplementedError("result processors")
        return _Plan(
            sql=compiled.string,
            positional=compiled.positiontup is not None,
            binds=tuple((n, by_name[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names),
            names=names,
            constants={name: bind.value for name, bind in by_name.items() if not bind.required},
            defaults=tuple(defaults),
            returning=bool(compiled.effective_returning),
            row=(
                namedtuple("Row", self.statement.selected_columns.keys(), rename=True)  # type: ignore[misc]
                if isinstance(self.statement, Select)
                else None
            ),
        )
