"""The project's documented errors: each one is a one-line message and an exit code.

Exit codes follow ``embedstore verify``: 1 means damaged or invalid input, 2 means the
file is not a store at all (or the command was used wrongly).
"""


class EmbedstoreError(Exception):
    """Base error; ``str(err)`` is the one-line message shown to the user."""

    exit_code = 1


class InputError(EmbedstoreError):
    """Bad user input: a missing file, mismatched rows, unknown classes..."""


class StoreDamaged(EmbedstoreError):
    """The file is a store but something in it is wrong (digest, shape, truncation)."""


class NotAStore(EmbedstoreError):
    """The file is not an HDF5 file, or not an embedstore store."""

    exit_code = 2


class StoreMissing(NotAStore, InputError):
    """No file at the path given as a store: not a store (exit 2), and bad input."""


class StoreTooNew(EmbedstoreError):
    """The store was written by a newer major format version."""

    exit_code = 2


class StoreIncomplete(EmbedstoreError):
    """The store is still being written, or its writer was interrupted."""


class StoreExists(EmbedstoreError):
    """Refusing to overwrite an existing store, space or prompt set without a flag."""


class WriteFailed(EmbedstoreError):
    """Writing failed (disk full, permissions); earlier files were left as they were."""


class ModelUnavailable(EmbedstoreError):
    """Model weights or tokenizer files are not available locally and cannot be fetched."""
