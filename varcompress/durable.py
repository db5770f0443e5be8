"""Durable, atomic writes of files, directories and log lines; operating-system errors as one line.

The one writing mechanism of varcompress (`checkpoint` re-exports it). A write counts as
done only once the data and the directory entry are fsynced, so a power loss after a
write returns never loses it, and older checkpoints are pruned only after that.
Directories are swapped in with one atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`);
where that is missing, the old directory is kept as `.NAME.old-*` until the new one is
in place, and `recover_dir` (run before every write and by `remove_stale_temps`) puts it
back if a run was cut between the two renames. Every `OSError` becomes one
`VarcompressError` line naming the path and the cause, with nothing half-written left.
"""
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

from .errors import VarcompressError

# Messages of non-OSError exceptions that writers raise for a failed write (torch.save, safetensors).
_WRITE_FAILED = ("file write failed", "IoError", "No space left", "Read-only file system")


def os_error_line(e: BaseException, target: str | os.PathLike | None = None, tmp: str | os.PathLike | None = None) -> str:
    """'PATH: cause' for an OS error: the file it names, or `target` when it names our temporary."""
    name = getattr(e, "filename", None)
    if name is None or (tmp is not None and str(name).startswith(str(tmp))) or _is_temp_path(name):
        name = target if target is not None else name
    text = str(e).strip()
    cause = getattr(e, "strerror", None) or (text.splitlines()[0][:200] if text else type(e).__name__)
    if isinstance(e, OSError) and e.errno == errno.EEXIST and name is not None and Path(name).exists() \
            and not Path(name).is_dir():
        cause = "exists and is not a directory"
    return f"{name}: {cause}" if name is not None else str(cause)


def _is_temp_path(name) -> bool:
    return is_temp_name(Path(str(name)).name)


def _as_error(e: BaseException, target, tmp=None) -> VarcompressError | None:
    """The one-line error for a failed write, or None when `e` is not a write failure."""
    if isinstance(e, VarcompressError):
        return None
    if isinstance(e, OSError):
        return VarcompressError(f"cannot write {os_error_line(e, target, tmp)}")
    if isinstance(e, Exception) and any(s in str(e) for s in _WRITE_FAILED):
        return VarcompressError(f"cannot write {target}: {str(e).strip().splitlines()[0][:200]}")
    return None


def _ancestor(folder: Path) -> tuple[Path, list[Path]]:
    """The nearest existing ancestor of `folder` (itself included) and the missing ones below it."""
    missing, cur = [], Path(folder)
    while not os.path.lexists(cur) and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    return cur, missing


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


def make_parents(folder: Path, target: Path | None = None) -> list[Path]:
    """Create `folder` and missing parents; returns those created (deepest last) so a failure can undo them."""
    folder = Path(folder)
    target = folder if target is None else target
    cur, missing = _ancestor(folder)
    if not cur.is_dir():
        raise VarcompressError(f"cannot write {target}: {cur} is not a directory")
    made = []
    try:
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
    except OSError as e:
        _remove_made(made)
        raise VarcompressError(f"cannot write {os_error_line(e, target)}") from None
    return made


def _remove_made(made: list[Path]) -> None:
    for d in reversed(made):
        try:
            d.rmdir()
        except OSError:
            pass


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a directory's entries (a rename is durable only then); no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (IsADirectoryError, PermissionError):  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fsync_file(os.path.join(dirpath, f))
        fsync_dir(dirpath)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


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


def is_temp_name(name: str) -> bool:
    """Names our atomic writers give work in progress (`.x.abc.tmp`, `.x.tmp-ab12`, `.x.old-ab12`)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name or ".old-" in name)


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
