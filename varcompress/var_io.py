"""Build and load VAR transformers from official-format state dicts.

Every hyper-parameter is read off the tensors, so any depth, width, vocabulary or
`patch_nums` loads without a config file.
"""
from __future__ import annotations

import math
import os

import torch

from .checkpoint import check_finite, read_state_dict
from .errors import VarcompressError
from .flops import var_flops
from .models.var import VAR, VARConfig, level_layout
from .vae_io import infer_vae_config

_REQUIRED = ("word_embed.weight", "class_emb.weight", "pos_1LC", "lvl_1L", "head.weight", "blocks.0.ffn.fc1.weight")


def build_var(cfg: VARConfig, device: str | torch.device = "cpu") -> VAR:
    """Construct a VAR with the given config (device='meta' builds full sizes for free)."""
    check_var_config(cfg)
    with torch.device(device):
        return VAR(cfg)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_var_config(cfg: VARConfig, what: str = "VAR config") -> None:
    """Types and ranges of a VARConfig (it may come from a user-editable config.json), one line per problem."""
    for name in ("depth", "embed_dim", "num_heads", "vocab_size", "Cvae", "num_classes"):
        if not _positive_int(getattr(cfg, name)):
            raise VarcompressError(f"{what}: {name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.embed_dim % cfg.num_heads:
        raise VarcompressError(f"{what}: num_heads {cfg.num_heads} does not divide embed_dim {cfg.embed_dim}")
    for name in ("mlp_ratio", "norm_eps"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise VarcompressError(f"{what}: {name} must be a positive number, got {v!r}")
    if round(cfg.embed_dim * cfg.mlp_ratio) < 1:
        raise VarcompressError(f"{what}: mlp_ratio {cfg.mlp_ratio} leaves no FFN width")
    if not isinstance(cfg.patch_nums, (tuple, list)) or not cfg.patch_nums \
            or not all(_positive_int(p) for p in cfg.patch_nums):
        raise VarcompressError(f"{what}: patch_nums must be a non-empty list of positive integers, "
                               f"got {cfg.patch_nums!r}")
    if not isinstance(cfg.attn_l2_norm, bool):
        raise VarcompressError(f"{what}: attn_l2_norm must be true or false, got {cfg.attn_l2_norm!r}")


def _dims(sd: dict[str, torch.Tensor], key: str, ndim: int, what: str) -> torch.Size:
    """The shape of a tensor the config is read from; a wrong rank is a clear error, not an unpacking crash."""
    shape = sd[key].shape
    if len(shape) != ndim or any(n < 1 for n in shape):
        raise VarcompressError(f"{what}: {key} has shape {tuple(shape)}, expected {ndim} non-empty dims")
    return shape


def infer_var_config(sd: dict[str, torch.Tensor], what: str = "checkpoint", num_heads: int | None = None) -> VARConfig:
    """Read depth, width, heads, vocabulary, Cvae, classes, patch_nums and attn_l2_norm off `sd`."""
    if "quantize.embedding.weight" in sd or any(k.startswith("encoder.") for k in sd):
        raise VarcompressError(f"{what}: looks like a VQVAE checkpoint, not a VAR transformer")
    if any(k.startswith("experts.") or ".ffn.experts" in k for k in sd):
        raise VarcompressError(f"{what}: an activated (converted) model; load it with varcompress.load(DIR)")
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise VarcompressError(f"{what}: not a VAR checkpoint (missing {', '.join(missing[:3])})")
    depth = 0
    while f"blocks.{depth}.ffn.fc1.weight" in sd:
        depth += 1
    C, Cvae = _dims(sd, "word_embed.weight", 2, what)
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    if l2:
        heads = _dims(sd, "blocks.0.attn.scale_mul_1H11", 4, what)[1]
        if C % heads:
            raise VarcompressError(f"{what}: {heads} heads (scale_mul_1H11) do not divide the width {C}")
    elif num_heads is not None:
        heads = num_heads
    elif C % 64 == 0:
        heads = C // 64  # the official models use 64-dim heads
    else:
        raise VarcompressError(f"{what}: cannot infer num_heads (no scale_mul_1H11 and width {C} is not a multiple of 64)")
    num_classes = _dims(sd, "class_emb.weight", 2, what)[0] - 1
    if num_classes < 1:
        raise VarcompressError(f"{what}: class_emb.weight has {num_classes + 1} row(s), expected classes + 1 >= 2")
    return VARConfig(
        depth=depth, embed_dim=C, num_heads=heads,
        mlp_ratio=_dims(sd, "blocks.0.ffn.fc1.weight", 2, what)[0] / C,
        vocab_size=_dims(sd, "head.weight", 2, what)[0], Cvae=Cvae,
        num_classes=num_classes,
        patch_nums=_patch_nums_from_levels(sd["lvl_1L"], what), attn_l2_norm=l2,
    )


def _patch_nums_from_levels(lvl_1L: torch.Tensor, what: str) -> tuple[int, ...]:
    flat = lvl_1L.reshape(-1)
    if flat.is_complex() or flat.device.type == "meta":
        raise VarcompressError(f"{what}: lvl_1L must hold scale indices, got a {flat.dtype} tensor on {flat.device}")
    levels = flat.double()
    if not levels.numel() or not torch.isfinite(levels).all() or not torch.equal(levels, levels.round()) \
            or levels.min() < 0 or levels.max() >= levels.numel():
        raise VarcompressError(f"{what}: lvl_1L does not hold scale indices 0..S-1 (one per token)")
    counts = torch.bincount(levels.long()).tolist()
    pns = tuple(math.isqrt(c) for c in counts)
    if any(p < 1 or p * p != c for p, c in zip(pns, counts)):
        raise VarcompressError(f"{what}: lvl_1L does not describe square scales (counts {counts[:10]})")
    return pns


def _check_layout(sd: dict[str, torch.Tensor], cfg: VARConfig, what: str) -> None:
    """lvl_1L and the block-causal mask are functions of patch_nums: anything else is a corrupt file."""
    lvl, mask = level_layout(tuple(cfg.patch_nums))
    if any(sd[k].device.type == "meta" for k in ("lvl_1L", "attn_bias_for_masking")):
        return
    if not torch.equal(sd["lvl_1L"].to(lvl.dtype), lvl):
        raise VarcompressError(f"{what}: lvl_1L is not the scale layout of patch_nums {tuple(cfg.patch_nums)}")
    if not torch.equal(sd["attn_bias_for_masking"].float(), mask):
        raise VarcompressError(f"{what}: attn_bias_for_masking is not the block-causal mask of patch_nums "
                               f"{tuple(cfg.patch_nums)}")


def validate_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """One clear line for the first problem: missing, unexpected or mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise VarcompressError(f"{what}: missing {len(missing)} key(s), e.g. {', '.join(map(repr, missing[:3]))}")
    if unexpected:
        raise VarcompressError(f"{what}: unexpected {len(unexpected)} key(s), e.g. "
                               f"{', '.join(map(repr, unexpected[:3]))}")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise VarcompressError(f"{what}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")


def var_from_state_dict(sd: dict[str, torch.Tensor], what: str = "checkpoint", vae=None,
                        num_heads: int | None = None) -> VAR:
    cfg = infer_var_config(sd, what, num_heads)
    model = build_var(cfg, device="meta")
    validate_state_dict(model, sd, what)
    check_finite(sd, what, masks=("attn_bias_for_masking",))
    _check_layout(sd, cfg, what)
    model = build_var(cfg, device="cpu") if not _all_meta(sd) else model
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                          strict=True, assign=_all_meta(sd))
    return model.eval().attach_vae(vae)


def _all_meta(sd) -> bool:
    return all(v.device.type == "meta" for v in sd.values())


def load_var(path: str | os.PathLike, vae=None, num_heads: int | None = None) -> VAR:
    """Load an official-format VAR checkpoint (`var_d16.pth`, ...) in eval mode, float32.

    Pass the VQVAE to enable generation; its `patch_nums` is set from the VAR's.
    """
    return var_from_state_dict(read_state_dict(path), str(path), vae=vae, num_heads=num_heads)


def describe_checkpoint(ckpt: str | os.PathLike | None = None, arch: str | None = None) -> dict:
    """What `varcompress inspect` shows: a VAR or VQVAE checkpoint file, or (`arch`) an official
    architecture, d16|d20|d24|d30, built on the meta device.

    {"kind": "vqvae", "what", "config", "params"} or {"kind": "var", "what", "config", "tokens",
    "params", "flops" (`flops.var_flops`)}.
    """
    if (ckpt is None) == (arch is None):
        raise VarcompressError("give exactly one of CKPT or --arch")
    if arch is not None:
        if arch not in ("d16", "d20", "d24", "d30"):
            raise VarcompressError(f"--arch {arch!r}: expected one of d16, d20, d24, d30")
        cfg, what = VARConfig.official(int(arch[1:])), f"official VAR-{arch} (meta device)"
    else:
        sd = read_state_dict(ckpt)
        if "quantize.embedding.weight" in sd:
            return {"kind": "vqvae", "what": str(ckpt), "config": infer_vae_config(sd),
                    "params": sum(v.numel() for k, v in sd.items() if "ema_vocab_hit" not in k)}
        cfg, what = infer_var_config(sd, str(ckpt)), str(ckpt)
    model = build_var(cfg, device="meta")
    return {"kind": "var", "what": what, "config": cfg, "tokens": model.L,
            "params": sum(p.numel() for p in model.parameters()), "flops": var_flops(cfg)}
