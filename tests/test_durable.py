"""Issue #15: durable writes. fsync before a write counts as done, a directory swap that never
loses the output (and is repaired when cut), protected log appends, one-line OS errors."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from varcompress import durable
from varcompress.durable import (append_line, atomic_dir, atomic_write, check_output, recover_dir,
                                 remove_stale_temps, replace_dir)
from varcompress.errors import VarcompressError
from varcompress.training.resume import save_training_state


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _record_fsyncs(monkeypatch) -> list:
    """Log every fsync (by path) and every rename, in order."""
    log, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        log.append(("replace", str(a), str(b)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_folder(tmp_path, monkeypatch):
    log = _record_fsyncs(monkeypatch)
    atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    kinds = [e[0] for e in log]
    assert kinds == ["fsync", "replace", "fsync"]
    assert log[0][1] == log[1][1]                 # the temporary file's data, before the rename
    assert log[2][1] == str(tmp_path)             # the folder's entry, after it
    assert (tmp_path / "a.txt").read_text() == "x"


def test_checkpoints_are_pruned_only_after_the_new_one_is_durable(tmp_path, monkeypatch):
    for s in (1, 2):
        save_training_state(tmp_path, s, {"step": s})
    log = _record_fsyncs(monkeypatch)
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (log.append(("unlink", str(self))),
                                                                          real_unlink(self, missing_ok=missing_ok)))
    save_training_state(tmp_path, 3, {"step": 3})
    unlink = next(i for i, e in enumerate(log) if e[0] == "unlink")
    assert [e[0] for e in log[:unlink]] == ["fsync", "replace", "fsync"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000002.pt", "step_0000003.pt"]


def test_atomic_dir_fsyncs_every_file_before_the_swap(tmp_path, monkeypatch):
    log = _record_fsyncs(monkeypatch)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("1")
        (tmp / "g").write_text("2")
    swap = next(i for i, e in enumerate(log) if e[0] == "replace")
    synced = {Path(e[1]).name for e in log[:swap]}
    assert {"f", "g", "sub"} <= synced
    assert _tree(tmp_path / "out") == {"g": "2", "sub/f": "1"}


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_replace_dir_swaps_old_for_new(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(durable.dirs, "_exchange", lambda a, b: False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "v").write_text("old")
    with atomic_dir(tmp_path / "out", force=True) as tmp:
        (tmp / "v").write_text("new")
    assert _tree(tmp_path / "out") == {"v": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copy left


def test_crash_between_the_two_renames_leaves_a_usable_output_and_is_repaired(tmp_path, monkeypatch):
    """Without exchange support: cut after `out` was moved aside. The old output survives as
    `.out.old-*`; the next write (or `remove_stale_temps`) puts it back, then writes."""
    monkeypatch.setattr(durable.dirs, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "v").write_text("old")

    class Crash(BaseException):  # a kill: no handler of ours runs its clean-up for it
        pass

    def crash(tmp, out):
        raise Crash

    monkeypatch.setattr(durable.dirs, "_rename_new", crash)
    monkeypatch.setattr(os, "replace", _replace_without_rollback(monkeypatch))
    with pytest.raises(Crash):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "v").write_text("new")
    olds = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert not out.exists() and len(olds) == 1 and (olds[0] / "v").read_text() == "old"
    monkeypatch.undo()
    assert remove_stale_temps(tmp_path) >= 1          # what every writer runs on its folder first
    assert _tree(out) == {"v": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _replace_without_rollback(monkeypatch):
    """os.replace, except that the rollback rename (old -> out) is lost, as in a power cut."""
    real = os.replace

    def replace(a, b):
        if ".old-" in str(a):
            return None
        return real(a, b)
    return replace


def test_recover_dir_restores_only_when_the_output_is_missing(tmp_path):
    (tmp_path / ".out.old-aaaa1111").mkdir()
    (tmp_path / ".out.old-aaaa1111" / "v").write_text("old")
    assert recover_dir(tmp_path / "out") and (tmp_path / "out" / "v").read_text() == "old"
    (tmp_path / ".out.old-bbbb2222").mkdir()
    assert not recover_dir(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # a stale old copy beside a good output: removed


def test_replace_dir_second_rename_failing_puts_the_old_output_back(tmp_path, monkeypatch):
    monkeypatch.setattr(durable.dirs, "_exchange", lambda a, b: False)

    def fail(tmp, out):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))
    monkeypatch.setattr(durable.dirs, "_rename_new", fail)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "v").write_text("old")
    with pytest.raises(VarcompressError, match=r"cannot write .*out: No space left on device"):
        with atomic_dir(tmp_path / "out", force=True) as tmp:
            (tmp / "v").write_text("new")
    assert _tree(tmp_path / "out") == {"v": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_append_line_cuts_a_torn_tail_and_undoes_a_failed_append(tmp_path, monkeypatch):
    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 1}\n{"step": 2')      # killed mid-line
    append_line(log, '{"step": 2}')
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(VarcompressError, match=r"cannot write .*m.jsonl: No space left on device"):
        append_line(log, '{"step": 3}')
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


@pytest.mark.parametrize("err,cause", [(errno.ENOSPC, "No space left on device"),
                                       (errno.EROFS, "Read-only file system"),
                                       (errno.EACCES, "Permission denied")])
def test_atomic_write_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, err, cause):
    def fsync(fd):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "new" / "deeper" / "a.txt"
    with pytest.raises(VarcompressError) as e:
        atomic_write(target, lambda tmp: Path(tmp).write_text("x"))
    assert str(e.value) == f"cannot write {target}: {cause}"
    assert list(tmp_path.iterdir()) == []           # not even the parent folders it made


def test_check_output_names_path_and_cause(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    with pytest.raises(VarcompressError, match=r"afile/x: .*afile is not a directory"):
        check_output(tmp_path / "afile" / "x")
    with pytest.raises(VarcompressError, match=r"exists \(use --force"):
        check_output(tmp_path / "afile")
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(VarcompressError, match=r"cannot write .*/y/z: .*(Permission denied|Read-only file system)"):
        check_output(tmp_path / "y" / "z")


def test_replace_dir_into_missing_output(tmp_path):
    (tmp_path / ".x.tmp").mkdir()
    replace_dir(tmp_path / ".x.tmp", tmp_path / "x")
    assert (tmp_path / "x").is_dir() and not (tmp_path / ".x.tmp").exists()
