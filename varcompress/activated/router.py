"""Per-block expert router: predicts each routed expert's output norm from the FFN input token.

Target: log or plain L2 norm of each expert's partial output (its fc2 contribution).
The linear router is fitted in closed form (ridge); the 2-layer MLP router
(Linear -> Tanh -> Linear, DMoE-VAR style) with a few hundred full-batch Adam steps.
Selection (`expert_mask` / `expert_pairs`, the one routing function of the eager model and
the engine): static top-k, or dynamic-k (keep experts whose predicted norm is at least
(1 - tau) * the token's largest). `straight_through_mask` gives the training-time
mask hard + soft - soft.detach() for the later distillation stage.
"""
from __future__ import annotations

import torch
from torch import nn


class Router(nn.Module):
    def __init__(self, in_features: int, experts: int, kind: str = "linear", hidden: int = 128,
                 target: str = "log"):
        super().__init__()
        self.kind, self.target, self.experts = kind, target, experts
        if kind == "linear":
            self.net = nn.Linear(in_features, experts)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, experts))
        else:
            raise ValueError(f"unknown router kind {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, E): predicted (log-)norms; larger = more important."""
        return self.net(x)

    def predicted_norms(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.exp() if self.target == "log" else scores.clamp_min(0)

    def flops_per_token(self) -> float:
        return float(sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear)))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(N, E) bool: each token's k highest-scoring experts."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, scores.topk(k, dim=1).indices, True)
    return mask


def dynamic_mask(norms: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, E) bool: experts whose predicted norm >= (1 - tau) * the token's max (always >= 1 expert)."""
    return norms >= (1 - tau) * norms.amax(dim=1, keepdim=True)


def expert_mask(scores: torch.Tensor, routing: str, top_k: int, tau: float, norms) -> torch.Tensor:
    """(N, R) bool: the experts each token runs; static top-k, or dynamic-k on `norms(scores)`."""
    if routing == "dynamic":
        return dynamic_mask(norms(scores), tau)
    return topk_mask(scores, top_k)


def expert_pairs(scores: torch.Tensor, routing: str, top_k: int, tau: float, norms
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, expert) of every routed pair (the pairs of `expert_mask`), sorted by expert, tokens
    ascending within an expert: what every dispatch strategy consumes."""
    if routing == "dynamic":
        exp_tok = expert_mask(scores, routing, top_k, tau, norms).t().nonzero()  # expert-major
        return exp_tok[:, 1], exp_tok[:, 0]
    if top_k <= 0:
        none = torch.zeros(0, dtype=torch.long, device=scores.device)
        return none, none
    sel = scores.topk(top_k, dim=1).indices.reshape(-1)  # (N*k,), token-major
    order = sel.argsort(stable=True)
    return order.div(top_k, rounding_mode="floor"), sel[order]


def straight_through_mask(scores: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Forward value = the hard 0/1 mask; gradient = that of softmax(scores)."""
    soft = scores.softmax(dim=1)
    return hard.to(soft.dtype) + soft - soft.detach()


def router_targets(norms: torch.Tensor, target: str) -> torch.Tensor:
    return norms.clamp_min(1e-6).log() if target == "log" else norms


@torch.no_grad()
def _ridge(X: torch.Tensor, Y: torch.Tensor, lam: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares with intercept: W (d, E), b (E,); ridge scaled by the feature variance."""
    X, Y = X.double(), Y.double()
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    G = Xc.T @ Xc
    G += torch.eye(G.shape[0], dtype=G.dtype) * (lam * G.diagonal().mean().clamp_min(1e-12))
    W = torch.linalg.solve(G, Xc.T @ Yc)
    return W, my - mx @ W


def fit_router(router: Router, X: torch.Tensor, norms: torch.Tensor, steps: int = 300,
               seed: int = 0, lr: float = 3e-3) -> dict[str, float]:
    """Fit on calibration FFN inputs X (N, C) and true expert norms (N, E); returns train R^2."""
    Y = router_targets(norms.float(), router.target)
    dev, dt = next(router.parameters()).device, next(router.parameters()).dtype
    if router.kind == "linear":
        W, b = _ridge(X, Y)
        with torch.no_grad():
            router.net.weight.copy_(W.T.to(dt))
            router.net.bias.copy_(b.to(dt))
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        first, last = router.net[0], router.net[2]
        with torch.no_grad():
            first.weight.copy_(torch.randn(first.weight.shape, generator=g) / X.shape[1] ** 0.5 / X.std().clamp_min(1e-6))
            first.bias.zero_()
            hid = router.net[1](first(X.to(dev, dt)))
            W, b = _ridge(hid, Y)  # start from the best read-out of the random features
            last.weight.copy_(W.T.to(dt))
            last.bias.copy_(b.to(dt))
        Xd, Yd = X.to(dev, dt), Y.to(dev, dt)
        opt = torch.optim.Adam(router.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = (router(Xd) - Yd).pow(2).mean()
                loss.backward()
                opt.step()
    with torch.no_grad():
        pred = router(X.to(dev, dt)).float()
        r2 = 1 - (pred - Y).pow(2).mean() / Y.var(0, unbiased=False).mean().clamp_min(1e-12)
    return {"r2": float(r2)}
