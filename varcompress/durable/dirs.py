"""Atomic directory swaps (kept `.NAME.old-*` where exchange is missing, put back by `recover_dir`),
stale temporary cleanup, and the pre-work output check."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..errors import VarcompressError
from .common import _ancestor, _as_error, _remove_made, _umask, fsync_dir, fsync_tree, is_temp_name, make_parents


def check_output(out: str | os.PathLike, force: bool = False) -> Path:
    """Before any work: refuse an existing output (unless force) and a place that cannot be written
    (a regular file as a parent, no permission, a read-only file system), in one line."""
    out = Path(out)
    recover_dir(out)
    if os.path.lexists(out) and not force:
        raise VarcompressError(f"{out}: exists (use --force to overwrite)")
    anc, _ = _ancestor(out.parent)
    if not anc.is_dir():
        raise VarcompressError(f"cannot write {out}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        ro = hasattr(os, "statvfs") and os.statvfs(anc).f_flag & getattr(os, "ST_RDONLY", 1)
        raise VarcompressError(f"cannot write {out}: {anc}: {'Read-only file system' if ro else 'Permission denied'}")
    return out


@contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False):
    """Yield a fresh temporary directory next to `out`; when the block succeeds it becomes `out`.

    Refuses an existing `out` unless force; on any failure the temporary directory is removed,
    so `out` is the old directory or the complete new one, never half of one.
    """
    out = Path(out)
    recover_dir(out)
    if out.exists() and not force:
        raise VarcompressError(f"{out}: exists (use --force to overwrite)")
    made = make_parents(out.parent, out)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        fsync_tree(tmp)
        replace_dir(tmp, out)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():
            _remove_made(made)
        err = _as_error(e, out, tmp)
        if err is not None:
            raise err from None
        raise


_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # this file system (or kernel) cannot exchange: use the two-rename swap
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move a fully written (fsynced) temporary directory into place as `out`.

    An existing `out` is exchanged with `tmp` in one step; without exchange support it is
    renamed to `.NAME.old-*` first and removed only once the new one is in place (a cut
    between the two renames is repaired by `recover_dir`), so `out` is never lost.
    """
    tmp, out = Path(tmp), Path(out)
    if not os.path.lexists(out):
        os.replace(tmp, out)
    elif _exchange(tmp, out):
        fsync_dir(out.parent)
        _remove(tmp)  # holds the old directory now
    else:
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        fsync_dir(out.parent)
        try:
            _rename_new(tmp, out)
        except BaseException:
            if not os.path.lexists(out):
                os.replace(old, out)
            raise
        fsync_dir(out.parent)
        _remove(old)
        return
    fsync_dir(out.parent)


def _rename_new(tmp: Path, out: Path) -> None:
    """The second rename of the fallback swap (its own function so tests can cut the swap here)."""
    os.replace(tmp, out)


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def recover_dir(out: str | os.PathLike) -> bool:
    """Finish a directory swap that was cut: put the newest `.NAME.old-*` back when `out` is missing."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return False
    prefix = f".{out.name}.old-"
    olds = sorted((p for p in parent.iterdir() if p.name.startswith(prefix)), key=lambda p: p.stat().st_mtime)
    restored = False
    if olds and not os.path.lexists(out):
        os.replace(olds.pop(), out)
        fsync_dir(parent)
        restored = True
    for p in olds:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return restored


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete what a killed writer left in `folder` (never a finished artifact; a cut swap is
    first put back by `recover_dir`); returns the count removed or restored."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in list(folder.iterdir()):
        if ".old-" in p.name and p.name.startswith(".") and os.path.lexists(p):
            n += recover_dir(folder / p.name[1:].split(".old-")[0])
    stale = [p for p in folder.iterdir() if is_temp_name(p.name)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return n + len(stale)
