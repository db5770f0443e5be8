"""One exception type for every user-facing failure, so the CLI can print one line."""


class VarcompressError(Exception):
    """A problem with the user's input (file, flag, recipe), stated in one line."""
