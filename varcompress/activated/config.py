"""ConvertConfig: every knob of `varcompress convert`, validated, JSON round-trippable.

`top_k` counts *routed* experts per token (None: all of them, i.e. the dense FFN);
`shared_experts` are always on in addition. Experts are routed only on the last
`expert_scales` scales (None: all); tokens of earlier scales run the dense FFN (they
are few, and errors there propagate to the whole image). `compensation` replaces a
skipped expert's output by its calibration mean on the tokens where it is skipped.
`keep_ratio` is either one float applied to the last `sparse_scales` scales (earlier
scales stay dense), one ratio per scale, or one such list per block (what the allocation
writes with `keep_granularity: block`). `skipped_kv` says whether a skipped token still
writes K/V ("computed": its K/V projection runs, a sixth of a block's matmuls per token, so
later queries keep it as context) or not ("none": only kept tokens are keys). After a
`flops_target` allocation the resolved per-block `top_k` list and `keep_ratio` lists are
stored here, so a saved config.json rebuilds the exact model.

Defaults were chosen by measurement on the trained `digits` testbed teacher
(benchmarks/convert_variants.py; KL to the teacher on held-out tokens at equal FLOPs):
kmeans clustering, linear router on log-norms, static top-k routing, conditional-mean
compensation, experts on the last 3 scales, residual selector, identity reconstruction,
sensitivity-driven allocation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import VarcompressError, from_known_fields
from ..models.sampler import OFFICIAL_SAMPLING

CHOICES = {
    "clustering": ("kmeans", "coact", "random"),
    "router": ("linear", "mlp"),
    "router_target": ("log", "norm"),
    "routing": ("topk", "dynamic"),
    "selector": ("learned", "residual", "mean_distance"),
    "reconstruction": ("identity", "prev_scale", "cached"),
    "skipped_kv": ("none", "computed"),
    "upsample": ("bilinear", "nearest", "area"),
    "allocation": ("uniform", "sensitivity"),
    "keep_granularity": ("scale", "block"),
}


@dataclass
class ConvertConfig:
    experts: int = 8
    top_k: int | list[int] | None = None  # None: all routed experts (dense FFN)
    shared_experts: int = 0
    clustering: str = "kmeans"
    router: str = "linear"
    router_target: str = "log"
    router_hidden: int = 128
    router_steps: int = 300
    routing: str = "topk"
    tau: float = 0.5
    compensation: bool = True
    expert_scales: int | None = 3  # experts routed on the last N scales (None: all); earlier: dense FFN
    keep_ratio: float | list[float] | list[list[float]] = 1.0
    sparse_scales: int = 3
    selector: str = "residual"
    reconstruction: str = "identity"
    upsample: str = "bilinear"
    cache_scale: int | None = None  # reconstruction "cached": the scale whose update map fills skipped tokens
    skipped_kv: str = "none"  # K/V at a skipped token: none (absent) or computed (its K/V projection runs)
    flops_target: float | None = None
    allocation: str = "sensitivity"
    keep_granularity: str = "scale"  # sensitivity allocation: one keep ratio per scale, or per (block, scale)
    calib_samples: int = 32
    calib_tokens: int = 8192
    calib_cfg: float = OFFICIAL_SAMPLING["cfg"]  # calibration sampling
    calib_top_k: int = OFFICIAL_SAMPLING["top_k"]
    calib_top_p: float = OFFICIAL_SAMPLING["top_p"]
    sensitivity_samples: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation ------------------------------------------------------------------
    def validate(self) -> "ConvertConfig":
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                _bad(name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("experts", "router_hidden", "calib_samples", "calib_tokens", "sensitivity_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                _bad(name, f"must be a positive integer, got {v!r}")
        if not isinstance(self.sparse_scales, int) or isinstance(self.sparse_scales, bool) or self.sparse_scales < 0:
            _bad("sparse_scales", f"must be an integer >= 0 (0: no token selection), got {self.sparse_scales!r}")
        if self.sparse_scales == 0 and not isinstance(self.keep_ratio, list) and self.keep_ratio < 1:
            _bad("keep_ratio", "is below 1 but sparse_scales is 0 (no scale selects tokens)")
        if not isinstance(self.shared_experts, int) or not 0 <= self.shared_experts < self.experts:
            _bad("shared_experts", f"must be in [0, experts-1={self.experts - 1}], got {self.shared_experts!r}")
        routed = self.experts - self.shared_experts
        lo = 0 if self.shared_experts > 0 else 1
        for k in self.top_k if isinstance(self.top_k, list) else [] if self.top_k is None else [self.top_k]:
            if not isinstance(k, int) or isinstance(k, bool) or not lo <= k <= routed:
                _bad("top_k", f"must be an integer in [{lo}, experts - shared_experts = {routed}], got {k!r}")
        if isinstance(self.top_k, list) and not self.top_k:
            _bad("top_k", "per-block list is empty")
        ratios = self.keep_ratio if isinstance(self.keep_ratio, list) else [self.keep_ratio]
        if ratios and all(isinstance(r, list) for r in ratios):
            if not all(ratios) or len({len(r) for r in ratios}) != 1:
                _bad("keep_ratio", "per-block lists must be non-empty and of one length (the scales)")
            ratios = [r for row in ratios for r in row]
        if not ratios:
            _bad("keep_ratio", "per-scale list is empty")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                _bad("keep_ratio", f"ratios must be in (0, 1], got {r!r}")
        if self.expert_scales is not None and (not isinstance(self.expert_scales, int)
                                                or isinstance(self.expert_scales, bool) or self.expert_scales < 1):
            _bad("expert_scales", f"must be a positive integer or None (all scales), got {self.expert_scales!r}")
        if self.cache_scale is not None and (isinstance(self.cache_scale, bool) or not isinstance(self.cache_scale, int)
                                             or self.cache_scale < 0):
            _bad("cache_scale", f"must be a scale index >= 0 or None, got {self.cache_scale!r}")
        if not isinstance(self.compensation, bool):
            _bad("compensation", f"must be true or false, got {self.compensation!r}")
        if not isinstance(self.tau, (int, float)) or not 0 <= self.tau <= 1:
            _bad("tau", f"must be in [0, 1], got {self.tau!r}")
        if self.flops_target is not None:
            if isinstance(self.flops_target, bool) or not isinstance(self.flops_target, (int, float)) \
                    or not 0 < self.flops_target <= 1:
                _bad("flops_target", f"must be a fraction in (0, 1], got {self.flops_target!r}")
            if self.routing == "dynamic":
                _bad("flops_target", "needs routing='topk' (dynamic-k cost is data-dependent)")
        if not isinstance(self.router_steps, int) or self.router_steps < 0:
            _bad("router_steps", f"must be >= 0, got {self.router_steps!r}")
        if not 0 < self.calib_top_p <= 1 or self.calib_top_k < 0 or self.calib_cfg < 0:
            _bad("calib_top_p", "calibration sampling needs top_p in (0,1], top_k >= 0, cfg >= 0")
        return self

    def check_model(self, depth: int, num_scales: int, hidden: int) -> None:
        """Checks that need the model: expert size, per-block and per-scale list lengths."""
        if hidden % self.experts:
            _bad("experts", f"{self.experts} does not divide the FFN width {hidden}")
        if isinstance(self.top_k, list) and len(self.top_k) != depth:
            _bad("top_k", f"per-block list has {len(self.top_k)} entries, the model has {depth} blocks")
        if self.cache_scale is not None and self.cache_scale >= num_scales:
            _bad("cache_scale", f"{self.cache_scale} is not a scale of the model ({num_scales} scales)")
        rows = self.keep_ratio if self.keep_per_block_given else [self.keep_ratio]
        if self.keep_per_block_given and len(rows) != depth:
            _bad("keep_ratio", f"per-block lists: {len(rows)}, the model has {depth} blocks")
        for row in rows:
            if isinstance(row, list) and len(row) != num_scales:
                _bad("keep_ratio", f"per-scale list has {len(row)} entries, the model has {num_scales} scales")

    # ---- resolved views -----------------------------------------------------------------
    @property
    def routed_experts(self) -> int:
        return self.experts - self.shared_experts

    def top_k_per_block(self, depth: int) -> list[int]:
        if isinstance(self.top_k, list):
            return list(self.top_k)
        return [self.routed_experts if self.top_k is None else self.top_k] * depth

    @property
    def keep_per_block_given(self) -> bool:
        return isinstance(self.keep_ratio, list) and bool(self.keep_ratio) and isinstance(self.keep_ratio[0], list)

    def keep_per_scale(self, num_scales: int) -> list[float]:
        """One ratio per scale (refused for per-block ratios: use `keep_per_block`)."""
        if self.keep_per_block_given:
            raise ValueError("keep_ratio is per block; use keep_per_block")
        if isinstance(self.keep_ratio, list):
            return [float(r) for r in self.keep_ratio]
        n_sparse = min(self.sparse_scales, num_scales)
        return [1.0] * (num_scales - n_sparse) + [float(self.keep_ratio)] * n_sparse

    def keep_per_block(self, depth: int, num_scales: int) -> list[list[float]]:
        """Keep ratios [block][scale], whichever way they were given."""
        if self.keep_per_block_given:
            return [[float(r) for r in row] for row in self.keep_ratio]
        return [self.keep_per_scale(num_scales) for _ in range(depth)]

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConvertConfig":
        return from_known_fields(cls, d, "convert config")

    def replace(self, **kw) -> "ConvertConfig":
        return dataclasses.replace(self, **kw)


def keep_counts(patch_nums, ratios: list[float]) -> list[int]:
    """Tokens kept per scale per row: k_s = max(1, round(r_s * pn^2))."""
    return [min(pn * pn, max(1, round(r * pn * pn))) for pn, r in zip(patch_nums, ratios)]


def _bad(field: str, why: str):
    raise VarcompressError(f"convert config: {field} {why}")
