"""Results store: database (SQLite by default, any SQLAlchemy URL), image files, retention.

The inspection path hands results to `AsyncResultWriter`, which commits them in batches from
one thread; the API and the export read through the `ResultStore` protocol.
"""

from cellinspect.storage.errors import (
    ResultNotFoundError,
    ReviewConflictError,
    ReviewInvalidError,
    StoreError,
)
from cellinspect.storage.factory import open_store
from cellinspect.storage.protocols import ResultStore
from cellinspect.storage.records import (
    ImageKind,
    ResultFilter,
    ReviewInput,
    ReviewLabel,
    StoredResult,
)
from cellinspect.storage.retention import RetentionPolicy
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.writer import AsyncResultWriter, SubmitOutcome

__all__ = [
    "AsyncResultWriter",
    "ImageKind",
    "ResultFilter",
    "ResultNotFoundError",
    "ResultStore",
    "RetentionPolicy",
    "ReviewConflictError",
    "ReviewInput",
    "ReviewInvalidError",
    "ReviewLabel",
    "SqlResultStore",
    "StoreError",
    "StoredResult",
    "SubmitOutcome",
    "open_store",
]
