"""The activated-model directory: written atomically, rebuilt exactly.

DIR/model.safetensors  every tensor, expert permutations included
DIR/config.json        format "varcompress-activated": VARConfig, the resolved ConvertConfig,
                       varcompress version, source checkpoint sha256 and path, budget
(written to a temporary directory and renamed into place; extra files, e.g. the distill
recipe, land in the same rename).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from ..activated.build import build_gated_block
from ..activated.config import ConvertConfig, keep_counts
from ..activated.model import ActivatedVAR
from ..checkpoint import check_finite, read_format_json, read_state_dict
from ..durable import atomic_dir
from ..errors import VarcompressError
from ..models.var import VARConfig
from ..var_io import build_var, check_var_config, validate_state_dict
from ..version import __version__

FORMAT = "varcompress-activated"
FORMAT_VERSION = 1


def save_activated(model: ActivatedVAR, out_dir: str | os.PathLike, source_sha256: str | None = None,
                   force: bool = False, source: dict | None = None, extra_files: dict[str, str] | None = None) -> Path:
    """Write `out_dir/{model.safetensors, config.json}` atomically; refuse to overwrite unless force.

    `source` records where the dense model came from (checkpoint path, testbed name);
    `extra_files` (name -> text) land in the same atomic rename (e.g. the distill recipe).
    """
    with atomic_dir(out_dir, force) as tmp:
        write_activated_files(model, tmp, source_sha256, source, extra_files)
    return Path(out_dir)


def write_activated_files(model: ActivatedVAR, folder: Path, source_sha256: str | None = None,
                          source: dict | None = None, extra_files: dict[str, str] | None = None) -> None:
    """model.safetensors + config.json (+ extra files) into an existing folder."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": FORMAT})
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "varcompress_version": __version__,
              "var_config": model.cfg.to_dict(), "convert_config": model.convert_cfg.to_dict(),
              "source_sha256": source_sha256, "source": source or {}, "budget": model.budget()}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)


def read_activated_config(path: str | os.PathLike) -> dict:
    d = Path(path)
    if not d.is_dir():
        raise VarcompressError(f"{d}: not an activated-model directory")
    cj = d / "config.json"
    if not cj.exists() or not (d / "model.safetensors").exists():
        raise VarcompressError(f"{d}: missing config.json or model.safetensors")
    return read_format_json(cj, FORMAT, FORMAT_VERSION, "activated model")


def build_skeleton(var_cfg: VARConfig, ccfg: ConvertConfig) -> ActivatedVAR:
    """The activated model's structure on the meta device (no weights)."""
    dense = build_var(var_cfg, "meta")
    S, depth = len(var_cfg.patch_nums), var_cfg.depth
    counts = [keep_counts(var_cfg.patch_nums, r) for r in ccfg.keep_per_block(depth, S)]
    ks = ccfg.top_k_per_block(depth)
    blocks = [build_gated_block(blk, b, ccfg, var_cfg.patch_nums, var_cfg.norm_eps, counts[b], ks[b])
              for b, blk in enumerate(dense.blocks)]
    return ActivatedVAR(var_cfg, ccfg, blocks)


def skeleton_for_weights(var_config, convert_config, sd: dict, what: str) -> ActivatedVAR:
    """The skeleton a config card describes, checked against the weights before anything is built
    (a card claiming 10**9 blocks must fail at once, not after hours of building)."""
    try:
        var_cfg = VARConfig.from_dict(var_config)
        check_var_config(var_cfg)
        ccfg = ConvertConfig.from_dict(convert_config)
    except VarcompressError as e:
        raise VarcompressError(f"{what}/config.json: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise VarcompressError(f"{what}/config.json: malformed ({type(e).__name__}: {e})") from None
    C, hidden = var_cfg.embed_dim, round(var_cfg.embed_dim * var_cfg.mlp_ratio)
    L = sum(p * p for p in var_cfg.patch_nums)
    w1 = [v for k, v in sd.items() if k.startswith("blocks.0.") and k.endswith(".experts_w1")]
    expect = {"word_embed.weight": (C, var_cfg.Cvae), "head.weight": (var_cfg.vocab_size, C),
              "class_emb.weight": (var_cfg.num_classes + 1, C), "pos_1LC": (1, L, C)}
    got = {k: tuple(sd[k].shape) if k in sd else None for k in expect}
    blocks = {k.split(".")[1] for k in sd if k.startswith("blocks.")}
    ffn = tuple(w1[0].shape[:2]) if w1 and w1[0].dim() == 3 else None
    if len(blocks) != var_cfg.depth or got != expect or ffn is None or ffn[0] * ffn[1] != hidden:
        bad = next((k for k in expect if got[k] != expect[k]), None)
        detail = (f"{bad} is {got[bad]}, the card implies {expect[bad]}" if bad else
                  f"{len(blocks)} blocks and FFN experts {ffn} in the weights; the card says depth "
                  f"{var_cfg.depth}, FFN width {hidden}")
        raise VarcompressError(f"{what}: weights do not match config.json ({detail})")
    ccfg.check_model(var_cfg.depth, len(var_cfg.patch_nums), hidden)
    return build_skeleton(var_cfg, ccfg)


def load_activated(path: str | os.PathLike, vae=None) -> ActivatedVAR:
    """Rebuild a saved activated model exactly (eval mode); pass the VQVAE to enable generation."""
    config = read_activated_config(path)
    sd = read_state_dict(Path(path) / "model.safetensors")
    model = skeleton_for_weights(config.get("var_config"), config.get("convert_config"), sd, str(path))
    validate_state_dict(model, sd, str(path))
    check_finite(sd, str(path), masks=("attn_bias_for_masking",))
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().attach_vae(vae)
