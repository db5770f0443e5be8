"""One exception type for every user-facing failure, so the CLI can print one line."""


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
