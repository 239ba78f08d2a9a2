"""Each SQL statement is compiled once a test process, not once a test.

SQLAlchemy keeps what it compiled in a cache of each engine's own (and, for the ORM's
inserts and updates, of each mapper's), keyed by the engine's dialect object. Production
makes an engine or two a process and compiles each statement once; the suite makes an
engine for every test, whose first use of each statement compiled it again: about a tenth
of the suite's time.

Here every engine ``rapport.db.make_engine`` makes shares one cache, and the mappers share
one, keyed by the dialect's kind instead of the object: engines of one kind are made
alike (``make_engine``), so what one compiled serves them all. A test still runs each
statement on its own connection, with its own engine's dialect.
"""

from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import configure_mappers
from sqlalchemy.util import LRUCache

from rapport import db


class _ByDialectKind(LRUCache[Any, Any]):
    @staticmethod
    def _kind(key: Any) -> Any:
        if isinstance(key, tuple) and key and isinstance(key[0], Dialect):
            return (type(key[0]), *key[1:])
        return key

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._kind(key), default)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._kind(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(self._kind(key), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._kind(key))


_statements = _ByDialectKind(5000)


def install() -> None:
    make = db.make_engine

    def shared(url: str, **kwargs: Any) -> Any:
        engine = make(url, **kwargs)
        if engine._compiled_cache is not None:
            engine._compiled_cache = _statements
        return engine

    db.make_engine = shared  # type: ignore[assignment]
    configure_mappers()
    for mapper in db.Base.registry.mappers:
        mapper.__dict__["_compiled_cache"] = _ByDialectKind(100)
