"""Exceptions that carry a message meant for the user (printed without a traceback)."""


class UserError(Exception):
    """A problem the user can fix: a wrong path, option or value. The message says which."""


class CacheStateError(UserError):
    """The page cache is not in the state a trial claims (cold or warm)."""


class VerificationError(Exception):
    """A reader did not do exactly the work the manifest describes."""


class TrialError(Exception):
    """A trial could not produce a valid measurement; the message names the cell."""


class ImageDecodeError(Exception):
    """An image could not be decoded; the message starts with its path."""
