"""CUDA graphs of the per-scale transformer pass (one graph per scale and batch size).

Each scale's pass reads a static input buffer and the static modulation buffers and
writes the K/V buffers and its logits, all at fixed addresses, so it can be captured
once and replayed. Sampling and the next-scale input stay outside the graphs. On a
CPU device the same static-buffer protocol runs eagerly ("emulated"), which lets the
tests check it without a GPU.
"""
from __future__ import annotations

import torch


class ScaleGraphs:
    def __init__(self, fwd_static, device: torch.device):
        self.fwd, self.device = fwd_static, device
        self.emulate = device.type != "cuda"
        self.graphs: dict[int, object] = {}
        self.x_in: dict[int, torch.Tensor] = {}
        self.out: dict[int, torch.Tensor] = {}
        self.mods = None
        self.pool = None

    def set_inputs(self, mods) -> None:
        """Copy this generation's modulations into the static buffers (allocated on first use)."""
        per_block, head = mods
        if self.mods is None:
            self.mods = ([tuple(t.clone() for t in m) for m in per_block], tuple(t.clone() for t in head))
            return
        for dst, src in zip(self.mods[0], per_block):
            for d, s in zip(dst, src):
                d.copy_(s)
        for d, s in zip(self.mods[1], head):
            d.copy_(s)

    def run(self, si: int, st: dict, x: torch.Tensor) -> torch.Tensor:
        if si not in self.graphs:
            self._capture(si, st, x)
        self.x_in[si].copy_(x)
        if self.emulate:
            self.out[si].copy_(self.fwd(si, st, self.x_in[si]))
        else:
            self.graphs[si].replay()
        return self.out[si]

    def _capture(self, si: int, st: dict, x: torch.Tensor) -> None:
        self.x_in[si] = x.clone()
        if self.emulate:
            self.out[si] = self.fwd(si, st, self.x_in[si]).clone()
            self.graphs[si] = "emulated"
            return
        cur = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy inits, cuBLAS workspaces, compiled kernels
                self.fwd(si, st, self.x_in[si])
        cur.wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.out[si] = self.fwd(si, st, self.x_in[si])
        self.pool = g.pool()
        self.graphs[si] = g
