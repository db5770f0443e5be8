"""PruneConfig: every knob of `varcompress prune`, validated (one-line VarcompressErrors), JSON round-trippable.

Methods (all training-free; `prune --finetune` then trains every one with the same budget):
- "magnitude": FFN neurons ranked by ||fc1 row||_2 * ||fc2 column||_2 (data-free).
- "wanda":     FFN neurons ranked by ||a_j||_2 * ||fc2 column j||_1, a_j = the neuron's GELU
               output on calibration tokens drawn by the teacher (Wanda's |W| * ||X|| on
               fc2, summed over the column); optional bias compensation (the removed
               neurons' mean output is folded into the fc2 bias).
- "residual-tokens" (formerly "tokens", still accepted): training-free token pruning:
               fixed per-scale keep counts on the last `sparse_scales` scales, kept tokens
               chosen per image by convert's parameter-free `residual` score, skipped tokens
               reconstructed like the activated model (`identity` | `prev_scale`).
- "fastvar":   FastVAR-style cached token pruning: on the last `sparse_scales` (2) scales
               each block computes the tokens farthest from the scale's mean token; skipped
               tokens get the block's update cached at `cache_scale` (default: the last dense
               scale), upsampled (`upsample`, default area).
- "both":      neurons (magnitude or wanda, `neuron_score`) + residual tokens; "fastvar-wanda":
               neurons + FastVAR tokens; `token_share` of the FLOPs saving comes from tokens.
- "split":     CoDe-style scale split: the teacher draws the first `split_scale` scales, a
               neuron-pruned copy (`neuron_score`) prefills them and draws the rest; its width
               is solved so the pair costs `flops_target`.
`flops_target` is the transformer-FLOPs fraction of the *teacher* to reach (<=, within 1%).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import VarcompressError, from_known_fields

METHODS = ("magnitude", "wanda", "residual-tokens", "both", "fastvar", "fastvar-wanda", "split")
ALIASES = {"tokens": "residual-tokens"}  # deprecated names -> current ones
TOKEN_METHODS = ("residual-tokens", "both", "fastvar", "fastvar-wanda")
CHOICES = {"method": METHODS, "neuron_score": ("magnitude", "wanda"),
           "reconstruction": ("identity", "prev_scale", "cached"), "upsample": ("bilinear", "nearest", "area")}


@dataclass
class PruneConfig:
    method: str = "wanda"
    flops_target: float = 0.75
    neuron_score: str = "wanda"          # scoring used by method "both"
    compensate: bool | None = None       # fold removed neurons' mean output into fc2.bias (None: wanda yes)
    sparse_scales: int | None = None     # token pruning only touches the last N scales (None: 3; fastvar 2)
    keep_ratio: list[float] | None = None  # explicit per-scale keep ratios (tokens/both); None: solve
    reconstruction: str | None = None    # None: prev_scale (fastvar: cached)
    upsample: str | None = None          # None: bilinear (fastvar: area)
    cache_scale: int | None = None       # fastvar: scale whose block update fills skipped tokens (None: last dense)
    split_scale: int | None = None       # split: scales drawn by the teacher (None: all but the last 2)
    small_depth: int | None = None       # split: blocks of the small model (None: half the teacher's, rounded up)
    token_share: float = 0.5             # "both": share of the FLOPs saving taken by token pruning
    min_hidden: int = 8                  # never prune an FFN below this many neurons
    calib_samples: int = 64              # teacher-drawn maps for wanda scores (and convert's calibration)
    calib_cfg: float | None = None       # calibration sampling (None: the teacher card's / official)
    calib_top_k: int | None = None
    calib_top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method in ALIASES:
            self.method = ALIASES[self.method]
        fast = self.method in ("fastvar", "fastvar-wanda")
        if self.sparse_scales is None:
            self.sparse_scales = 2 if fast else 3
        if self.reconstruction is None:
            self.reconstruction = "cached" if fast else "prev_scale"
        if self.upsample is None:
            self.upsample = "area" if fast else "bilinear"
        self.validate()

    def validate(self) -> "PruneConfig":
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                _bad(name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        t = self.flops_target
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            _bad("flops_target", f"must be a fraction in (0, 1], got {t!r}")
        for name in ("sparse_scales", "min_hidden", "calib_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _bad(name, f"must be a positive integer, got {v!r}")
        if self.compensate is not None and not isinstance(self.compensate, bool):
            _bad("compensate", f"must be true, false or null, got {self.compensate!r}")
        s = self.token_share
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1:
            _bad("token_share", f"must be in (0, 1), got {s!r}")
        for name in ("cache_scale", "split_scale", "small_depth"):
            v = getattr(self, name)
            lo = 0 if name == "cache_scale" else 1
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                _bad(name, f"must be an integer >= {lo} or null, got {v!r}")
        for name in ("split_scale", "small_depth"):
            if getattr(self, name) is not None and self.method != "split":
                _bad(name, f"only applies to method split, not {self.method!r}")
        if self.keep_ratio is not None:
            if self.method not in TOKEN_METHODS:
                _bad("keep_ratio", f"only applies to methods tokens and both, not {self.method!r}")
            if not isinstance(self.keep_ratio, list) or not self.keep_ratio:
                _bad("keep_ratio", "must be a non-empty list of per-scale ratios")
            for r in self.keep_ratio:
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                    _bad("keep_ratio", f"ratios must be in (0, 1], got {r!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            _bad("seed", f"must be a non-negative integer, got {self.seed!r}")
        return self

    @property
    def prunes_neurons(self) -> bool:
        return self.method in ("magnitude", "wanda", "both", "fastvar-wanda", "split")

    @property
    def prunes_tokens(self) -> bool:
        return self.method in TOKEN_METHODS

    @property
    def selector(self) -> str:
        """Token score: FastVAR's distance to the scale mean, else convert's residual score."""
        return "mean_distance" if self.method in ("fastvar", "fastvar-wanda") else "residual"

    @property
    def score(self) -> str:
        """The neuron score in use ('magnitude' | 'wanda')."""
        return self.method if self.method in ("magnitude", "wanda") else self.neuron_score

    @property
    def use_compensation(self) -> bool:
        return self.score == "wanda" if self.compensate is None else self.compensate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        return from_known_fields(cls, d, "prune config")


def matched_config(method: str, flops_target: float, matched: dict | None = None, **options) -> PruneConfig:
    """PruneConfig of `method` at `flops_target`; the token settings not given (sparse_scales,
    reconstruction, upsample) are those of `matched`, the convert config of the activated model to
    match, unless the method is a FastVAR one or that model prunes no tokens: then the method's own."""
    m = matched or {}
    own = method in ("fastvar", "fastvar-wanda") or not m.get("sparse_scales")
    token = {k: options.pop(k, None) or (None if own else m.get(k)) for k in ("sparse_scales", "reconstruction",
                                                                              "upsample")}
    return PruneConfig(method=method, flops_target=flops_target, **token, **options)


def _bad(field: str, why: str):
    raise VarcompressError(f"prune config: {field} {why}")
