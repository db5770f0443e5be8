"""ExpertFFN: a dense FFN regrouped into E equal-size experts, computed only where routed.

Weights are the dense ones, permuted: expert e owns hidden neurons perm[e*h:(e+1)*h].
fc1 weight (E, h, C_in), fc1 bias (E, h); fc2 weight (E, C_out, h), fc2 bias (C_out).
Output = fc2 bias + sum of the selected experts' partial outputs (unweighted), so with
every expert selected it equals the dense FFN up to float summation order. With
compensation, a skipped expert contributes, instead of 0, its mean output over the
calibration tokens where the router skips it (`skip_mean`; a constant vector, no matmul).
Experts 0..shared-1 are always on; the router scores the others (`router.expert_pairs`,
the routing shared with the engine). The caller passes an `ExpertCall` per call: which rows
are routed (the others run the dense FFN) and the dispatch strategy (`EAGER_DISPATCH`):
"loop" loops over experts (never tokens): index_select the routed tokens, two matmuls,
index_add back; "masked" (training) computes every expert on every token, weighted by the
straight-through mask. Each FFN reports its mean active experts back in `ExpertCall.active`.
The engine (`engine.experts.FastExpertFFN`) routes the same way and differs only in dispatch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VarcompressError
from .router import Router, dynamic_mask, expert_mask, expert_pairs, straight_through_mask, topk_mask


@dataclass
class ExpertCall:
    """One call's plan for the expert FFNs of a block (made by the caller, passed down) and their report.

    routed: which input rows are routed: True (all), False (none: the dense FFN, e.g. tokens of
      the early scales) or a bool per row (rows flattened over the batch).
    dispatch: how the routed rows are computed, a key of `EAGER_DISPATCH`.
    active: filled by each FFN called: mean active experts per routed token (shared included;
      E where no row is routed), what the FLOPs model prices.
    """
    routed: torch.Tensor | bool = True
    dispatch: str = "loop"
    active: dict = field(default_factory=dict)


class ExpertFFN(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, experts: int,
                 approximate: str = "tanh", shared: int = 0, top_k: int | None = None,
                 router: Router | None = None, routing: str = "topk", tau: float = 0.5):
        super().__init__()
        if hidden % experts:
            raise ValueError(f"{experts} experts do not divide {hidden}")
        E, h = experts, hidden // experts
        self.E, self.h, self.shared, self.approximate = E, h, shared, approximate
        self.in_features, self.out_features = in_features, out_features
        self.experts_w1 = nn.Parameter(torch.empty(E, h, in_features))
        self.experts_b1 = nn.Parameter(torch.empty(E, h))
        self.experts_w2 = nn.Parameter(torch.empty(E, out_features, h))
        self.experts_b2 = nn.Parameter(torch.empty(out_features))
        self.register_buffer("perm", torch.arange(hidden))
        self.register_buffer("expected_active", torch.tensor(float(E - shared)))  # routed, for dynamic-k FLOPs
        # compensation: a skipped routed expert adds its mean partial output *over the calibration
        # tokens where the router skips it* (row k: top-k routing; `skip_mean_dyn`: dynamic-k);
        # zeros = no compensation
        self.register_buffer("skip_mean", torch.zeros(E - shared + 1, E - shared, out_features))
        self.register_buffer("skip_mean_dyn", torch.zeros(E - shared, out_features))
        self.router = router if router is not None else Router(in_features, E - shared)
        self.top_k = E - shared if top_k is None else top_k
        self.routing, self.tau = routing, tau

    @property
    def routed(self) -> int:
        return self.E - self.shared

    @classmethod
    @torch.no_grad()
    def from_dense(cls, fc1: nn.Linear, fc2: nn.Linear, groups: torch.Tensor, approximate: str = "tanh",
                   **kw) -> "ExpertFFN":
        """Regroup dense fc1/fc2 by `groups` (E, h) neuron indices (already in expert order)."""
        E, h = groups.shape
        dev, dt = fc1.weight.device, fc1.weight.dtype
        m = cls(fc1.in_features, fc1.out_features, fc2.out_features, E, approximate, **kw).to(dev, dt)
        perm = groups.reshape(-1).to(dev)
        m.perm.copy_(perm)
        m.experts_w1.copy_(fc1.weight[perm].view(E, h, -1))
        m.experts_b1.copy_(fc1.bias[perm].view(E, h))
        m.experts_w2.copy_(fc2.weight[:, perm].view(-1, E, h).transpose(0, 1))
        m.experts_b2.copy_(fc2.bias)
        return m

    def all_active(self) -> bool:
        if self.routing == "dynamic":
            return self.tau >= 1.0
        return self.top_k >= self.routed

    # ---- pieces -----------------------------------------------------------------------
    def partial(self, X: torch.Tensor, e: int) -> torch.Tensor:
        """Expert e's contribution (N, C_out) for tokens X (N, C_in), without the fc2 bias."""
        a = F.gelu(F.linear(X, self.experts_w1[e], self.experts_b1[e]), approximate=self.approximate)
        return F.linear(a, self.experts_w2[e])

    @torch.no_grad()
    def expert_norms(self, X: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """(N, E) L2 norms of every expert's partial output (calibration targets)."""
        return self.expert_stats(X, chunk)[0]

    @torch.no_grad()
    def expert_stats(self, X: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, E) partial-output norms and (E, C_out) mean partial outputs over the tokens X."""
        norms, sums = [], X.new_zeros(self.E, self.out_features, dtype=torch.float64)
        for i in range(0, X.shape[0], chunk):
            parts = [self.partial(X[i:i + chunk], e) for e in range(self.E)]
            norms.append(torch.stack([p.norm(dim=-1) for p in parts], 1))
            sums += torch.stack([p.double().sum(0) for p in parts])
        return torch.cat(norms), (sums / max(X.shape[0], 1)).to(X.dtype)

    def compensation(self) -> torch.Tensor:
        """(routed, C_out) vectors standing in for skipped routed experts under the current routing."""
        if self.routing == "dynamic":
            return self.skip_mean_dyn
        return self.skip_mean[min(max(self.top_k, 0), self.routed)]

    @torch.no_grad()
    def calibrate_compensation(self, X: torch.Tensor, chunk: int = 4096) -> None:
        """Fill `skip_mean` (every top-k level) and `skip_mean_dyn` from calibration tokens X."""
        R, S = self.routed, self.shared
        sums = torch.zeros(R + 2, R, self.out_features, dtype=torch.float64, device=X.device)
        counts = torch.zeros(R + 2, R, dtype=torch.float64, device=X.device)
        for i in range(0, X.shape[0], chunk):
            xs = X[i:i + chunk]
            scores = self.router(xs)
            skips = [~topk_mask(scores, k) for k in range(R + 1)]
            skips.append(~dynamic_mask(self.router.predicted_norms(scores), self.tau))
            skip = torch.stack(skips).double()                    # (R+2, n, R)
            for j in range(R):
                p = self.partial(xs, S + j).double()             # (n, C)
                sums[:, j] += skip[:, :, j] @ p
            counts += skip.sum(1)
        means = (sums / counts.clamp_min(1)[..., None]).to(self.skip_mean.dtype)
        self.skip_mean.copy_(means[:R + 1])
        self.skip_mean_dyn.copy_(means[R + 1])

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """(N, routed) router scores of tokens X (N, C)."""
        if self.routing == "oracle":  # measurement only: true norms (costs the whole FFN)
            return self.expert_norms(X)[:, self.shared:].clamp_min(1e-12).log()
        return self.router(X)

    def route(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, bool mask) over the routed experts for tokens X (N, C)."""
        scores = self.scores(X)
        return scores, expert_mask(scores, self.routing, self.top_k, self.tau, self.router.predicted_norms)

    def pairs(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token, expert) of the routed pairs of tokens X, sorted by expert (`router.expert_pairs`)."""
        return expert_pairs(self.scores(X), self.routing, self.top_k, self.tau, self.router.predicted_norms)

    # ---- forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, plan: ExpertCall | None = None) -> torch.Tensor:
        """`plan` (None: every row routed, "loop" dispatch): which rows are routed, how they are
        dispatched; the other rows run every expert (the dense FFN). Reports into `plan.active`."""
        plan = ExpertCall() if plan is None else plan
        shape = x.shape
        X = x.reshape(-1, shape[-1])
        flag = plan.routed
        if torch.is_tensor(flag) and flag.numel() != X.shape[0]:
            raise VarcompressError(f"ExpertFFN: the plan routes {flag.numel()} tokens but the input has "
                                   f"{X.shape[0]}; make one ExpertCall per call")
        if plan.dispatch not in EAGER_DISPATCH:
            raise VarcompressError(f"ExpertFFN: dispatch {plan.dispatch!r} is not one of {', '.join(EAGER_DISPATCH)}")
        dispatch = EAGER_DISPATCH[plan.dispatch]
        if self.all_active() or flag is False or (torch.is_tensor(flag) and not bool(flag.any())):
            out, active = self._forward_dense(X), float(self.E)
        elif flag is True or bool(flag.all()):
            out, active = dispatch(self, X)
        else:  # `active` is the mean over the *routed* tokens (what the FLOPs model needs)
            flag = flag.reshape(-1)
            ir, idn = flag.nonzero().squeeze(1), (~flag).nonzero().squeeze(1)
            routed, active = dispatch(self, X[ir])
            out = X.new_empty(X.shape[0], self.out_features)
            out = out.index_copy(0, ir, routed).index_copy(0, idn, self._forward_dense(X[idn]))
        plan.active[self] = active
        return out.view(*shape[:-1], self.out_features)

    def _forward_dense(self, X: torch.Tensor) -> torch.Tensor:
        E, h = self.E, self.h
        a = F.gelu(F.linear(X, self.experts_w1.reshape(E * h, -1), self.experts_b1.reshape(E * h)),
                   approximate=self.approximate)
        return F.linear(a, self.experts_w2.transpose(0, 1).reshape(self.out_features, E * h), self.experts_b2)

    def _dispatch_loop(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Per routed expert: gather its tokens, two matmuls, add back. -> (output, mean active experts)."""
        N, S = X.shape[0], self.shared
        mu = self.compensation()
        out = (self.experts_b2 + mu.sum(0)).expand(N, -1).clone()
        for e in range(S):
            out += self.partial(X, e)
        none = torch.zeros(0, dtype=torch.long, device=X.device)
        # the pairs grouped by expert once: one host read of the counts per call, not one per expert
        tok, exp = self.pairs(X) if self.routed > 0 and N > 0 else (none, none)
        counts = torch.bincount(exp, minlength=self.routed).tolist()
        start = 0
        for j, c in enumerate(counts):
            idx, start = tok[start:start + c], start + c
            if c == N:
                out += self.partial(X, S + j) - mu[j]
            elif c:
                out.index_add_(0, idx, self.partial(X.index_select(0, idx), S + j) - mu[j])
        return out, self.shared + (len(tok) / N if N else 0.0)

    def _dispatch_masked(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Training: every expert computed, weighted by the straight-through mask (value 0/1)."""
        N, S, mu = X.shape[0], self.shared, self.compensation()
        out, active = (self.experts_b2 + mu.sum(0)).expand(N, -1), float(S)
        for e in range(S):
            out = out + self.partial(X, e)
        if self.routed:
            scores, hard = self.route(X)
            m = straight_through_mask(scores, hard)
            for j in range(self.routed):
                out = out + m[:, j:j + 1] * (self.partial(X, S + j) - mu[j])
            active += float(hard.sum()) / N if N else 0.0
        return out, active

    def active_hidden(self) -> float:
        """Mean FFN neurons computed per token (the FLOPs model's `ffn_hidden`)."""
        if self.all_active():
            return float(self.E * self.h)
        routed = float(self.expected_active) if self.routing == "dynamic" else float(self.top_k)
        return (self.shared + routed) * self.h

    def router_flops(self) -> float:
        return 0.0 if self.all_active() or self.routed == 0 else self.router.flops_per_token()

    def extra_repr(self) -> str:
        return (f"experts={self.E}x{self.h}, shared={self.shared}, routing={self.routing}, "
                f"top_k={self.top_k}, tau={self.tau}")


EAGER_DISPATCH = {"loop": ExpertFFN._dispatch_loop, "masked": ExpertFFN._dispatch_masked}
