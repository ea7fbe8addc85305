"""The one error hierarchy of vecstore.

Every failure a user can cause raises a :class:`VecstoreError` subclass whose message says what is
wrong, where, and what to do. Each subclass also derives from the builtin exception a Python user
would expect (``ValueError``, ``TypeError``, ``OSError``, ``KeyError``) so that generic handlers
keep working. The CLI prints one line for these and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class VecstoreError(Exception):
    """Base class of every error vecstore raises on purpose."""


class InvalidInputError(VecstoreError, ValueError):
    """Vectors, queries, ids or options that cannot be used (NaN, wrong shape, k <= 0, ...)."""


class InvalidDtypeError(VecstoreError, TypeError):
    """An array whose dtype is not numeric (object, strings, structured ...)."""


class StoreNotFoundError(VecstoreError, FileNotFoundError):
    """A path that does not exist."""


class FormatError(VecstoreError, ValueError):
    """A file that is not a readable vecstore: not HDF5, foreign HDF5, or a damaged layout."""


class UnsupportedVersionError(FormatError):
    """A store written by a newer format version than this code reads."""


class UnknownCodecError(VecstoreError, ValueError):
    """A codec id or codec string that is not in the closed allow-list."""


class UnknownTierError(VecstoreError, KeyError):
    """A tier name that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class NotFittedError(VecstoreError, ValueError):
    """A codec used for encoding before it learned its parameters."""


class IntegrityError(VecstoreError, ValueError):
    """A dataset whose bytes no longer match the checksum recorded when it was written."""


class StoreWriteError(VecstoreError, OSError):
    """Writing a store failed (disk full, permission denied ...); the target is unchanged."""


class ClosedStoreError(VecstoreError, ValueError):
    """An operation on a store that was already closed."""


class ReadOnlyStoreError(VecstoreError, PermissionError):
    """A change (append, delete, compact) asked of a store opened read-only, or one in a directory
    this process cannot write."""


class ModelMismatchError(InvalidInputError):
    """Vectors (queries, appended documents, an encoder) from another model than the store's."""


class ShardUnavailableError(VecstoreError, OSError):
    """A shard could not be searched (its worker died more often than the cluster retries, its file
    vanished or was damaged after open, the query timed out) and the caller did not pass
    ``allow_partial=True``. ``shards`` names the shard files that failed."""

    def __init__(self, message: str, shards: tuple[str, ...] = ()):
        super().__init__(message)
        self.shards = tuple(shards)

    def __reduce__(self):  # keep ``shards`` across pickling (Dask ships exceptions between processes)
        return (type(self), (str(self), self.shards))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ClusterUnavailableError(VecstoreError, ConnectionError):
    """The Dask scheduler did not answer within the timeout, or the cluster has no workers."""
