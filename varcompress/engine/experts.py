"""Expert FFN dispatch for the engine: no per-expert host synchronisation.

`FastExpertFFN` computes the same output as `convert.experts.ExpertFFN` in eval mode
(fc2 bias + shared experts + the routed experts' partial outputs) with the same routing
(`convert.router.expert_pairs`); only the dispatch differs:

- all shared experts as one dense FFN (their weights concatenated once);
- compensation (`ExpertFFN.compensation()`): the skipped experts' stand-in vectors,
  folded into one constant (b2 + their sum) minus the vector of each expert that runs;
- the routed experts in one grouped dispatch: the (token, expert) pairs of the static
  top-k are sorted by expert (stable, so each token still sums its experts in
  ascending order), their rows gathered once, both matmuls run as grouped GEMMs over
  per-expert segments (`torch._grouped_mm`, offsets computed on the device: no sync,
  static shapes, so it can sit inside a CUDA graph), and the results index_add-ed back.
  Where `_grouped_mm` is missing or refuses the shapes, a segment loop over the same
  sorted rows is used (one host read of the counts per call, not one per expert).
  On CPU ("mixed", the default there) the choice is per call: `_grouped_mm`'s CPU
  fallback has the lower fixed cost and the segment loop's BLAS GEMMs the higher rate,
  so calls with at most `GROUPED_MAX_PAIRS` (token, expert) pairs take the grouped path
  (measured on the digits student, docs/PERFORMANCE.md).
- every expert active (top_k = routed): the dense FFN with the permuted weights.
Dynamic-k routing (data-dependent pairs) uses the segment loop.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..activated.router import expert_pairs
from ..errors import VarcompressError


def grouped_mm_ok(dtype: torch.dtype, *dims: int) -> bool:
    """torch._grouped_mm needs 16-byte aligned row strides (and exists only in recent torch)."""
    if not hasattr(torch, "_grouped_mm") or dtype not in (torch.float32, torch.bfloat16):
        return False
    return all((d * torch.tensor([], dtype=dtype).element_size()) % 16 == 0 for d in dims)


_PROBED: dict = {}
DISPATCHES = ("auto", "grouped", "segments", "mixed")
GROUPED_MAX_PAIRS = 1024  # CPU "mixed": above this many pairs the segment loop was faster


def _grouped_mm_runs(dtype: torch.dtype, device: torch.device) -> bool:
    """Probe once per (dtype, device): some builds/GPUs lack a kernel for this dtype."""
    key = (dtype, device.type, device.index)
    if key not in _PROBED:
        try:
            a = torch.zeros(8, 16, dtype=dtype, device=device)
            b = torch.zeros(2, 16, 8, dtype=dtype, device=device)
            torch._grouped_mm(a, b, offs=torch.tensor([4, 8], dtype=torch.int32, device=device))
            _PROBED[key] = True
        except (RuntimeError, TypeError, NotImplementedError):
            _PROBED[key] = False
    return _PROBED[key]


def _compensation(m) -> torch.Tensor:
    """The (routed, C_out) vectors a skipped routed expert contributes (zeros: no compensation)."""
    return m.compensation().detach()


class FastExpertFFN:
    def __init__(self, m, dtype: torch.dtype, device: torch.device, dispatch: str = "auto"):
        cv = lambda t: t.detach().to(device=device, dtype=dtype).contiguous()  # noqa: E731
        E, h, S, R = m.E, m.h, m.shared, m.routed
        self.E, self.h, self.S, self.R, self.approx = E, h, S, R, m.approximate
        self.C_out, self.routing, self.tau = m.out_features, m.routing, m.tau
        self.top_k = m.top_k
        self.all_active = m.all_active()
        w1, b1, w2 = m.experts_w1, m.experts_b1, m.experts_w2
        if m.routing not in ("topk", "dynamic"):
            raise VarcompressError(f"engine: routing={m.routing!r} is a measurement mode; it is not run by the engine")
        self.b2 = cv(m.experts_b2)
        # dense FFN with every expert: all-active models, and the scales a gated block does not route
        self.w1d, self.b1d = cv(w1.reshape(E * h, -1)), cv(b1.reshape(E * h))
        self.w2d = cv(w2.transpose(0, 1).reshape(self.C_out, E * h))
        if self.all_active:
            return
        self.w1s = cv(w1[:S].reshape(S * h, -1)) if S else None
        self.b1s = cv(b1[:S].reshape(S * h)) if S else None
        self.w2s = cv(w2[:S].transpose(0, 1).reshape(self.C_out, S * h)) if S else None
        self.w1r, self.b1r, self.w2r = cv(w1[S:]), cv(b1[S:]), cv(w2[S:])   # (R,h,C), (R,h), (R,C,h)
        mu = _compensation(m)                               # (R, C_out): skipped routed experts' stand-ins
        self.mu_r = cv(mu)                                  # subtracted where a routed expert runs
        self.base = cv(m.experts_b2.detach() + mu.sum(0))   # fc2 bias + every routed expert's stand-in
        self.w1r_t, self.w2r_t = self.w1r.transpose(1, 2), self.w2r.transpose(1, 2)  # (R,C,h), (R,h,C)
        # per-expert views made once: the segment loop runs up to R times per call (indexing costs ~1 us each)
        self.seg_w = [(self.w1r[j], self.b1r[j], self.w2r_t[j], self.mu_r[j].neg()) for j in range(R)]
        self.router = copy.deepcopy(m.router).to(device=device, dtype=dtype).eval()
        self.predicted_norms = m.router.predicted_norms
        if dispatch not in DISPATCHES:
            raise VarcompressError(f"engine: dispatch {dispatch!r} is not one of {', '.join(DISPATCHES)}")
        can_group = grouped_mm_ok(dtype, w1.shape[-1], h, self.C_out) and _grouped_mm_runs(dtype, device)
        if dispatch == "auto":  # GPU: grouped (no sync); CPU: by call size (host reads are free there)
            dispatch = "grouped" if device.type == "cuda" else "mixed"
        if dispatch in ("grouped", "mixed") and not can_group:
            dispatch = "segments"
        self.dispatch = dispatch

    @property
    def graph_safe(self) -> bool:
        """No host synchronisation in the forward (can be captured in a CUDA graph)."""
        return self.all_active or (self.dispatch == "grouped" and self.routing != "dynamic")

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every token (the dense FFN, permuted)."""
        a = F.gelu(F.linear(x, self.w1d, self.b1d), approximate=self.approx)
        return F.linear(a, self.w2d, self.b2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_active:
            return self.dense(x)
        shape = x.shape
        X = x.reshape(-1, shape[-1])
        N = X.shape[0]
        if self.S:
            a = F.gelu(F.linear(X, self.w1s, self.b1s), approximate=self.approx)
            out = F.linear(a, self.w2s, self.base)
        else:
            out = self.base.expand(N, -1).clone()
        if self.R and N and (self.routing == "dynamic" or self.top_k > 0):
            tok, exp = self._pairs(X)
            if self.dispatch == "grouped" or (self.dispatch == "mixed" and tok.numel() <= GROUPED_MAX_PAIRS):
                out.index_add_(0, tok, self._grouped(X.index_select(0, tok), exp))
            else:
                self._segments(X, tok, exp, out)
        return out.view(*shape[:-1], self.C_out)

    def _pairs(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token, expert) of every routed pair, sorted by expert (the eager model's routing)."""
        return expert_pairs(self.router(X), self.routing, self.top_k, self.tau, self.predicted_norms)

    def _grouped(self, Xs: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """Partial outputs (P, C_out) of the pairs' experts (rows sorted by expert): two grouped GEMMs."""
        # exp is sorted: segment ends by binary search (bincount would read its max on the host)
        ends = torch.arange(self.R, device=exp.device, dtype=exp.dtype)
        offs = torch.searchsorted(exp, ends, right=True).to(torch.int32)
        a = torch._grouped_mm(Xs, self.w1r_t, offs=offs).add_(self.b1r.index_select(0, exp))
        o = torch._grouped_mm(F.gelu(a, approximate=self.approx), self.w2r_t, offs=offs)
        return o.sub_(self.mu_r.index_select(0, exp))

    def _segments(self, X: torch.Tensor, tok: torch.Tensor, exp: torch.Tensor, out: torch.Tensor) -> None:
        """Per expert: gather its tokens, two matmuls, add back (one host read of the counts per call)."""
        counts = torch.bincount(exp, minlength=self.R).tolist()
        start = 0
        for (w1, b1, w2t, neg_mu), c in zip(self.seg_w, counts):
            if c:
                idx = tok[start:start + c]
                a = F.gelu(F.linear(X.index_select(0, idx), w1, b1), approximate=self.approx)
                out.index_add_(0, idx, torch.addmm(neg_mu, a, w2t))  # a @ w2^T - mu in one call
            start += c
