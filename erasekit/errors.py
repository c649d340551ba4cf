"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class ErasekitError(Exception):
    """Bad input or a broken artifact: the message says what is wrong and how to mend it."""
