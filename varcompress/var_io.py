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
from .models.var import VAR, VARConfig

_REQUIRED = ("word_embed.weight", "class_emb.weight", "pos_1LC", "lvl_1L", "head.weight", "blocks.0.ffn.fc1.weight")


def build_var(cfg: VARConfig, device: str | torch.device = "cpu") -> VAR:
    """Construct a VAR with the given config (device='meta' builds full sizes for free)."""
    with torch.device(device):
        return VAR(cfg)


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
    C, Cvae = sd["word_embed.weight"].shape
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    if l2:
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1]
    elif num_heads is not None:
        heads = num_heads
    elif C % 64 == 0:
        heads = C // 64  # the official models use 64-dim heads
    else:
        raise VarcompressError(f"{what}: cannot infer num_heads (no scale_mul_1H11 and width {C} is not a multiple of 64)")
    return VARConfig(
        depth=depth, embed_dim=C, num_heads=heads,
        mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C,
        vocab_size=sd["head.weight"].shape[0], Cvae=Cvae,
        num_classes=sd["class_emb.weight"].shape[0] - 1,
        patch_nums=_patch_nums_from_levels(sd["lvl_1L"], what), attn_l2_norm=l2,
    )


def _patch_nums_from_levels(lvl_1L: torch.Tensor, what: str) -> tuple[int, ...]:
    levels = lvl_1L.reshape(-1).tolist()
    counts = [levels.count(i) for i in range(max(levels) + 1)] if levels else []
    pns = tuple(math.isqrt(c) for c in counts)
    if not counts or any(p * p != c for p, c in zip(pns, counts)):
        raise VarcompressError(f"{what}: lvl_1L does not describe square scales (counts {counts[:10]})")
    return pns


def validate_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """One clear line for the first problem: missing, unexpected or mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise VarcompressError(f"{what}: missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        raise VarcompressError(f"{what}: unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise VarcompressError(f"{what}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")


def var_from_state_dict(sd: dict[str, torch.Tensor], what: str = "checkpoint", vae=None,
                        num_heads: int | None = None) -> VAR:
    cfg = infer_var_config(sd, what, num_heads)
    model = build_var(cfg, device="meta")
    validate_state_dict(model, sd, what)
    check_finite(sd, what, masks=("attn_bias_for_masking",))
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
