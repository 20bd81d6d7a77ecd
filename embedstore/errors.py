"""User-facing errors. Each carries one line that names the file or value and the fix.

The CLI prints `error: <message>` and exits with `exit_code`; no traceback.
"""


class EmbedstoreError(Exception):
    """Base class: a problem the user can fix. The message is one line."""

    exit_code = 2


class InputError(EmbedstoreError):
    """A data file, image, label or value that cannot be read or is outside the scheme."""


class ModelUnavailable(EmbedstoreError):
    """A model name that is unknown, or whose weights are not available offline."""


class StoreError(EmbedstoreError):
    """The store is missing, inconsistent or refused the operation."""


class StoreBusy(StoreError):
    """Another process holds the store's write lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later
