"""Atomic, fsynced file writes: a file is the old one or the complete new one, never half of one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import VarcompressError
from .common import _as_error, _remove_made, _umask, fsync_dir, fsync_file, make_parents


def atomic_write(path: str | os.PathLike, write_fn, force: bool = True) -> Path:
    """Write via `write_fn(tmp_path)`, fsync, rename, fsync the folder: all of it or nothing."""
    path = Path(path)
    if path.exists() and not force:
        raise VarcompressError(f"{path}: exists (use --force to overwrite)")
    made = make_parents(path.parent, path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
        _remove_made(made)
        err = _as_error(e, path, tmp)
        if err is not None:
            raise err from None
        raise
    return path
