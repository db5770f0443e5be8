"""One exception type for every user-facing failure, so the CLI can print one line."""
import dataclasses


class VarcompressError(Exception):
    """A problem with the user's input (file, flag, recipe), stated in one line.

    Line breaks that come from the input itself (a key or file name with a newline, a
    library's multi-line message) are escaped, so the message stays one line.
    """

    def __init__(self, message: object = "", *args):
        text = str(message)
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text, *args)


def from_known_fields(cls, d: dict, what: str):
    """`cls(**d)` for a dataclass config read from a file: an unknown key is a one-line error
    (a typo in a config must not be silently dropped)."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise VarcompressError(f"{what}: unknown field(s) {', '.join(unknown)}")
    return cls(**d)
