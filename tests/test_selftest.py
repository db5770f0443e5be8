"""Issue #15: `varcompress selftest` on CPU: every CPU path passes, every GPU path is skipped with its
reason, exit 0; a deliberately broken path makes it exit non-zero; the DDP row's mechanism (gloo, 2 CPU
processes) agrees with the reference."""
from __future__ import annotations

import torch

from varcompress import selftest as st
from varcompress.cli import main
from varcompress.engine import runners


def _rows(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        for status in ("passed", "failed", "skipped"):
            if f" {status} " in line:
                rows[line.split(f" {status} ")[0].strip()] = status
    return rows


def test_selftest_cpu_rows_pass_gpu_rows_skip(capsys):
    assert main(["selftest", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    names = [n for n, _, _, _ in st.plan("cpu")]
    assert set(names) <= set(rows) and "DDP (one process per device)" in rows
    for name in names:
        if name.startswith("cpu"):
            assert rows[name] == "passed", (name, out)
        else:
            assert rows[name] == "skipped", (name, out)
    assert "no CUDA device" in out and "0 failed" in out


def test_a_broken_path_fails_with_its_difference(capsys, monkeypatch):
    real = runners.DenseRunner.__call__
    def broken(self, x, *a):  # a shift along one channel direction (LayerNorm would hide a constant one)
        y = real(self, x, *a)
        return y + torch.linspace(0, 1, y.shape[-1], dtype=y.dtype)
    monkeypatch.setattr(runners.DenseRunner, "__call__", broken)
    assert main(["selftest", "--device", "cpu", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["cpu fp32 dense"] == "failed" and rows["cpu bf16 dense"] == "failed"
    assert rows["cpu fp32 activated, segment loop"] == "passed"  # gated blocks do not use the dense runner
    assert "logits differ by up to" in out


def test_near_tie_rule_and_tolerance():
    tie = [torch.tensor([[[2.0, 1.0, 0.0], [0.0, 1.0, 1.00001]]])]   # position 1: tokens 1 and 2 tie
    clear = [torch.tensor([[[2.0, 1.0, 0.0], [0.0, 1.0, 1.5]]])]
    ref = [torch.tensor([[0, 2]])]
    ok, detail = st.compare((ref, tie), ([torch.tensor([[0, 1]])], tie), torch.float32)
    assert ok and "near-tie" in detail
    ok, detail = st.compare((ref, clear), ([torch.tensor([[0, 1]])], clear), torch.float32)
    assert not ok and "greedy tokens differ" in detail
    ok, detail = st.compare((ref, clear), (ref, [clear[0] + torch.tensor([0.0, 0.0, 1e-2])]), torch.float32)
    assert not ok and "logits differ" in detail
    assert st.compare((ref, clear), (ref, clear), torch.float32)[0]


def test_ddp_row_mechanism_on_two_cpu_processes():
    var, _ = st.tiny_models()
    row = st.ddp_row("cpu", st.eager_reference(var), world=2)
    assert row.status == "passed", row
