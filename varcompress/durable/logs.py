"""Fsynced log appends that cut a torn tail first and undo a failed append."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import VarcompressError
from .common import os_error_line


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and fsync it; a torn last line (a killed writer's) is cut first.

    A failed append is undone (the file is truncated back), so the log never ends torn by us.
    """
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise VarcompressError(f"cannot write {os_error_line(e, path)}") from None
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":
            end = _after_last_newline(fd, end)
            os.ftruncate(fd, end)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], end + done)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, end)
            raise
    except OSError as e:
        raise VarcompressError(f"cannot write {os_error_line(e, path)}") from None
    finally:
        os.close(fd)


def _after_last_newline(fd: int, end: int, chunk: int = 1 << 16) -> int:
    pos = end
    while pos > 0:
        lo = max(0, pos - chunk)
        i = os.pread(fd, pos - lo, lo).rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        pos = lo
    return 0
