"""Load official-format VQVAE checkpoints: infer the architecture from the keys, validate, load strictly.

Every failure is one `VarcompressError` line naming the file and the first offending key(s).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import torch

from .checkpoint import check_finite, read_state_dict
from .errors import VarcompressError
from .models.vqvae import DEFAULT_PATCH_NUMS, VQVAE, VQVAEConfig

_VAR_MARKERS = ("class_emb.weight", "pos_start", "pos_1LC", "lvl_embed.weight", "word_embed.weight", "head.weight")


def _looks_like_var(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k in sd for k in _VAR_MARKERS) or any(k.startswith("blocks.") for k in sd)


def _has_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many consecutive indices i (from 0) have some key starting with `pattern.format(i)`.

    Counting by prefix (not one exact key) lets a single deleted tensor surface as a
    "missing key" error instead of silently shrinking the inferred architecture.
    """
    n = 0
    while _has_prefix(sd, pattern.format(n)):
        n += 1
    return n


def _shape(sd: Mapping[str, torch.Tensor], key: str, what: str, ndim: int = 4) -> torch.Size:
    if key not in sd:
        raise VarcompressError(f"{what}: missing key {key!r} (not an official-format VQVAE state_dict?)")
    if sd[key].dim() != ndim:
        raise VarcompressError(f"{what}: tensor {key!r} has shape {tuple(sd[key].shape)}, expected {ndim} dims")
    return sd[key].shape


def infer_vae_config(sd: Mapping[str, torch.Tensor], patch_nums: Sequence[int] | None = None,
                     what: str = "VQVAE state_dict") -> VQVAEConfig:
    """Read the architecture (ch, ch_mult, blocks, attention, z, V, K, scales) from the keys and shapes."""
    if _looks_like_var(sd):
        raise VarcompressError(f"{what}: looks like a VAR transformer checkpoint, not a VQVAE")
    ch = _shape(sd, "encoder.conv_in.weight", what)[0]
    levels = _count(sd, "encoder.down.{}.")
    if levels == 0:
        _shape(sd, "encoder.down.0.block.0.conv1.weight", what)
    ch_mult = []
    for i in range(levels):
        out = _shape(sd, f"encoder.down.{i}.block.0.conv1.weight", what)[0]
        if out % ch:
            raise VarcompressError(
                f"{what}: 'encoder.down.{i}.block.0.conv1.weight' has {out} channels, not a multiple of ch={ch}")
        ch_mult.append(out // ch)
    num_res_blocks = _count(sd, "encoder.down.0.block.{}.")
    z = _shape(sd, "quant_conv.weight", what)[0]
    V, z_e = _shape(sd, "quantize.embedding.weight", what, ndim=2)
    if z_e != z:
        raise VarcompressError(f"{what}: 'quantize.embedding.weight' has width {z_e} but quant_conv has {z} channels")
    if _has_prefix(sd, "quantize.quant_resi.qresi."):
        k = 1
    else:
        k = _count(sd, "quantize.quant_resi.qresi_ls.{}.")
        if k == 0:
            if any(re.match(r"quantize\.quant_resi\.\d+\.", key) for key in sd):
                raise VarcompressError(f"{what}: non-shared Phi layout (share_quant_resi=0) is not supported")
            _shape(sd, "quantize.quant_resi.qresi_ls.0.weight", what)
    n_scales = _shape(sd, "quantize.ema_vocab_hit_SV", what, ndim=2)[0]
    if patch_nums is None:
        if n_scales != len(DEFAULT_PATCH_NUMS):
            raise VarcompressError(
                f"{what}: the VQVAE has {n_scales} scales, not the official 10; pass patch_nums explicitly")
        patch_nums = DEFAULT_PATCH_NUMS
    elif len(patch_nums) != n_scales:
        raise VarcompressError(
            f"{what}: patch_nums {tuple(patch_nums)} has {len(patch_nums)} scales but the file has {n_scales}")
    try:
        return VQVAEConfig(
            vocab_size=int(V), z_channels=int(z), ch=int(ch), ch_mult=tuple(ch_mult),
            num_res_blocks=num_res_blocks, share_quant_resi=k, patch_nums=tuple(patch_nums),
            using_sa=_has_prefix(sd, f"encoder.down.{levels - 1}.attn.0."),
            using_mid_sa=_has_prefix(sd, "encoder.mid.attn_1."),
        )
    except VarcompressError as e:
        raise VarcompressError(f"{what}: {e}") from None


def build_vae(cfg: VQVAEConfig, device: str | torch.device = "cpu") -> VQVAE:
    """A freshly initialised float32 VQVAE; device='meta' builds the structure without memory."""
    with torch.device(device):
        return VQVAE(cfg)


def _first(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def validate_vae_state_dict(sd: Mapping[str, torch.Tensor], model: VQVAE, what: str) -> None:
    """Keys and shapes must equal the model's exactly; report the first offenders in one line."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    if missing:
        raise VarcompressError(f"{what}: missing key(s) {_first(missing)}")
    unexpected = [k for k in sd if k not in want]
    if unexpected:
        raise VarcompressError(f"{what}: unexpected key(s) {_first(unexpected)}")
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise VarcompressError(
                f"{what}: tensor {k!r} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")


def load_vae(path: str | os.PathLike, patch_nums: Sequence[int] | None = None) -> VQVAE:
    """Load an official-format VQVAE file (.pth or .safetensors) as a float32 model in eval mode."""
    what = str(path)
    sd = read_state_dict(path)
    if not sd:
        raise VarcompressError(f"{what}: empty state_dict")
    if _looks_like_var(sd):
        raise VarcompressError(f"{what}: looks like a VAR transformer checkpoint, not a VQVAE")
    check_finite(sd, what)
    cfg = infer_vae_config(sd, patch_nums, what=what)
    model = build_vae(cfg, device="meta")
    validate_vae_state_dict(sd, model, what)
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()
