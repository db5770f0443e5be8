"""What the durable writers share: one-line OS errors, missing parents, fsync, temporary names."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import VarcompressError

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


def is_temp_name(name: str) -> bool:
    """Names our atomic writers give work in progress (`.x.abc.tmp`, `.x.tmp-ab12`, `.x.old-ab12`)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name or ".old-" in name)
