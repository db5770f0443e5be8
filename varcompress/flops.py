"""Analytic FLOPs of VAR generation, per image with classifier-free guidance (2 rows).

A multiply-add counts as 2 FLOPs. Counted per scale of cached generation, per
component, from the numbers of tokens and FFN neurons actually computed, so the
same code prices dense, activated and pruned models.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COMPONENTS = ("qkv", "attn_core", "proj", "ffn", "router", "selector", "adaln", "embed", "head")


@dataclass
class ScaleWork:
    """What one block computes at one scale, per CFG row."""
    tokens: int          # query tokens run through attention and FFN
    keys: int            # keys attended to (cached + current)
    ffn_hidden: float    # mean active FFN neurons per computed token
    router_flops: float = 0.0    # per computed token
    selector_flops: float = 0.0  # per scale token (scores every candidate)
    kv_tokens: int = 0           # skipped tokens that still compute their K/V projection


@dataclass
class FlopsReport:
    per_scale: list[dict[str, float]] = field(default_factory=list)  # GFLOPs per component, per scale

    @property
    def by_component(self) -> dict[str, float]:
        return {c: sum(s.get(c, 0.0) for s in self.per_scale) for c in COMPONENTS}

    @property
    def transformer(self) -> float:
        """GFLOPs of the transformer (everything but the VQVAE), per image with CFG."""
        return sum(self.by_component.values())

    def to_dict(self) -> dict:
        return {"transformer_gflops": self.transformer, "by_component": self.by_component,
                "per_scale": self.per_scale}


def block_scale_flops(C: int, w: ScaleWork) -> dict[str, float]:
    """FLOPs of one block at one scale for one row."""
    t = w.tokens
    return {
        "qkv": 2 * t * C * 3 * C + 2 * w.kv_tokens * C * 2 * C,
        "attn_core": 2 * 2 * t * w.keys * C,
        "proj": 2 * t * C * C,
        "ffn": 2 * 2 * t * C * w.ffn_hidden,
        "router": t * w.router_flops,
        "selector": w.selector_flops,
        "adaln": 2 * C * 6 * C,
    }


def var_flops(cfg, work: list[list[ScaleWork]] | None = None, cfg_rows: int = 2) -> FlopsReport:
    """FLOPs of cached generation; `work[b][s]` overrides the dense work of block b at scale s."""
    C, V, hidden = cfg.embed_dim, cfg.vocab_size, round(cfg.embed_dim * cfg.mlp_ratio)
    report, keys = FlopsReport(), 0
    for s, pn in enumerate(cfg.patch_nums):
        n = pn * pn
        keys += n
        tot = dict.fromkeys(COMPONENTS, 0.0)
        for b in range(cfg.depth):
            w = work[b][s] if work is not None else ScaleWork(tokens=n, keys=keys, ffn_hidden=hidden)
            for k, v in block_scale_flops(C, w).items():
                tot[k] += v
        tot["embed"] += 2 * n * cfg.Cvae * C if s > 0 else 0.0
        tot["head"] += 2 * n * C * V + 2 * C * 2 * C
        report.per_scale.append({k: v * cfg_rows / 1e9 for k, v in tot.items()})
    return report
