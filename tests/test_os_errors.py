"""Issue #15: every operating-system error on every verb that writes is one line naming the path and
the cause, exit code 2, nothing half-written, inputs untouched.

One table: each writing verb (argv with OUT, its output) x each error: the output's parent is a
regular file ("not a directory"), the output exists (no --force), no permission, a read-only file
system, no space left. Permission and read-only are simulated (the tests run as root, where chmod
does not deny anything): `os.access` denies writing (what the pre-work check asks) and creating a
temporary file or folder raises the errno; the read-only case also reports ST_RDONLY from statvfs.
No space is `os.fsync` raising ENOSPC: the verb runs its work and fails at its first durable write.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from varcompress.cli import main
from varcompress.durable import is_temp_name

RECIPE = {"teacher": {"checkpoint": "digits"},
          "student": {"convert": {"experts": 4, "top_k": 2, "calib_samples": 4, "calib_tokens": 256,
                                  "router_steps": 2}},
          "data": {"count": 4, "cache_dir": "CACHE"},
          "stages": [{"steps": 1, "lr": 1e-3, "train": ["routers"], "losses": {"kl": 1.0}}],
          "run": {"batch": 2, "eval_every": 0, "progress": False, "device": "cpu"}}

# verb -> argv (OUT: the output; @recipe: the distill recipe written per test)
VERBS = {
    "export": ["export", "digits", "--out", "OUT"],
    "generate": ["generate", "digits", "-n", "1", "--classes", "0", "--out", "OUT"],
    "generate-npz": ["generate", "digits", "-n", "1", "--classes", "0", "--npz", "OUT.npz"],
    "convert": ["convert", "digits", "--experts", "4", "--calib-samples", "2", "--out", "OUT"],
    "prune": ["prune", "digits", "--method", "wanda", "--flops-target", "0.9", "--calib-samples", "4", "--out", "OUT"],
    "distill": ["distill", "@recipe", "--out", "OUT"],
    "compare": ["compare", "digits", "--out", "OUT", "--n-per-class", "2", "--rounds", "1", "--batch", "1"],
    "eval": ["eval", "digits", "--dataset", "digits", "--n-per-class", "2", "--json", "OUT.json"],
    "testbed-train": ["testbed", "train", "digits", "--out", "OUT", "--vae-steps", "1", "--var-steps", "1"],
    "bench": ["bench", "--model", "small", "--repeats", "1", "--same-process", "--no-act-eager", "--no-bf16",
              "--out", "OUT"],
}
CASES = ("not-a-directory", "exists", "permission", "read-only", "no-space")
SLOW = {("compare", "no-space"), ("bench", "no-space")}  # run their whole measurement first
# verbs that write into a folder that may exist (results, teacher assets): for them "exists" is a
# regular file where that folder should be
INTO_FOLDER = {"bench", "testbed-train"}
CAUSE = {"not-a-directory": "is not a directory", "exists": "exists (use --force",
         "permission": "Permission denied", "read-only": "Read-only file system",
         "no-space": "No space left on device"}
ERRNO = {"permission": errno.EACCES, "read-only": errno.EROFS}


def _deny(monkeypatch, err: int) -> None:
    real_access, real_statvfs = os.access, os.statvfs
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real_access(p, mode, **k))
    if err == errno.EROFS:
        monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY, **{
            k: getattr(real_statvfs(p), k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail")}))

    def refuse(*a, dir=None, **k):
        raise OSError(err, os.strerror(err), str(Path(dir or ".") / ".denied.tmp"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)


def _no_space(monkeypatch) -> None:
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)


def _error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress bars, which some verbs draw while working, aside);
    the error is the last thing written and there is no traceback."""
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    return [ln for ln in lines if ln.startswith("error")]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_os_error_is_one_line_exit_2_nothing_written(verb, case, tmp_path, monkeypatch, capsys):
    if (verb, case) in SLOW:
        pytest.skip("runs the whole measurement before its first write: tests/test_os_errors.py -m slow")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**RECIPE, "data": {**RECIPE["data"],
                                                                             "cache_dir": str(tmp_path / "cache")}}))
    base = tmp_path / "work"
    base.mkdir()
    if case == "not-a-directory":
        (base / "afile").write_text("a regular file\n")
        out = base / "afile" / "out"
    else:
        out = base / "out"
    argv = [str(tmp_path / "recipe.yaml") if a == "@recipe" else a for a in VERBS[verb]]
    argv = [a.replace("OUT", str(out)) for a in argv]
    target = Path(next(a for a in argv if a.startswith(str(out))))
    if case == "exists":
        if verb in INTO_FOLDER:
            target.write_text("a regular file\n")
        elif verb == "distill":  # a distill folder holding a finished run
            target.mkdir()
            (target / "result.json").write_text("{}\n")
        elif target.suffix:
            target.write_text("old\n")
        else:
            target.mkdir()
            (target / "keep.txt").write_text("old\n")
    before = _snapshot(tmp_path)
    if case in ERRNO:
        _deny(monkeypatch, ERRNO[case])
    elif case == "no-space":
        _no_space(monkeypatch)
    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    want = {"distill": "finished run", "bench": "is not a directory", "testbed-train": "is not a directory"}.get(
        verb, CAUSE[case]) if case == "exists" else CAUSE[case]
    assert want in lines[0], lines[0]
    assert str(base) in lines[0], lines[0]  # names the path
    after = _snapshot(tmp_path)
    inputs = {k: v for k, v in before.items()}
    assert all(after.get(k) == v for k, v in inputs.items()), "an input or existing output was changed"
    new = [k for k in after if k not in before and not k.startswith(("cache/", "work/.train_"))]
    assert not new or case == "exists" and verb == "distill" and all(k.startswith("work/out/") for k in new), new
    assert not [p for p in tmp_path.rglob("*") if is_temp_name(p.name)]
    if case != "exists":
        assert not target.exists()


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(v for v, _ in SLOW))
def test_os_error_no_space_slow_verbs(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = [a.replace("OUT", str(out)) for a in VERBS[verb]]
    _no_space(monkeypatch)
    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0] and str(out) in lines[0]
    assert not out.exists() and not [p for p in tmp_path.rglob("*") if is_temp_name(p.name)]
