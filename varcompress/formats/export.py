"""`export`: one deployable directory for any model varcompress makes or reads.

DIR/model.safetensors  every tensor: official key names for dense models (neuron-pruned
                       ones included); experts, neuron permutations (`...ffn.perm`),
                       routers and selectors for activated ones
DIR/config.json        format "varcompress-model": kind (dense | activated), the
                       architecture, the conversion config and budget, FLOPs, sampling
                       defaults, the resolved distill recipe and its metrics when there
                       are some, and provenance (source checkpoint sha256, VQVAE
                       fingerprint, varcompress version)

`varcompress.load(DIR, vae=...)` rebuilds the model exactly. The export is deterministic
(no timestamps), so exporting the same model twice gives identical bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..activated.model import ActivatedVAR
from ..checkpoint import check_finite, first_line, read_format_json, read_state_dict
from ..durable import atomic_dir
from ..errors import VarcompressError
from ..flops import var_flops
from ..models.var import VARConfig
from ..var_io import validate_state_dict, var_from_state_dict
from ..version import __version__
from .activated import skeleton_for_weights

FORMAT = "varcompress-model"
FORMAT_VERSION = 1
KINDS = ("dense", "activated")


@dataclass
class Exportable:
    """A model plus everything known about where it came from."""
    model: torch.nn.Module
    source: dict = field(default_factory=dict)      # path, sha256, testbed, kind of input
    recipe: dict | None = None                      # resolved distill recipe
    metrics: dict | None = None                     # distill result.json "models" section
    pruning: dict | None = None                     # prune.json (method, FLOPs matching)
    vae_fingerprint: str | None = None


def vae_fingerprint(vae) -> str:
    """sha256 of the VQVAE's codebook: cheap, and different for any two trained tokenizers."""
    w = vae.quantize.embedding.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(w.numpy().tobytes()).hexdigest()


def _kind(model) -> str:
    return "activated" if isinstance(model, ActivatedVAR) else "dense"


def build_config(ex: Exportable, sampling: dict | None) -> dict:
    """config.json of an export (everything but the tensors)."""
    m, kind = ex.model, _kind(ex.model)
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "varcompress_version": __version__,
           "kind": kind, "var_config": m.cfg.to_dict(), "convert_config": None, "experts": None,
           "params": sum(p.numel() for p in m.parameters())}
    if kind == "activated":
        cfg["convert_config"] = m.convert_cfg.to_dict()
        cfg["experts"] = [_expert_card(b, blk) for b, blk in enumerate(m.blocks)]
        cfg["budget"] = m.budget()
    else:
        dense = var_flops(m.cfg)
        cfg["budget"] = {"transformer_gflops": dense.transformer, "dense_transformer_gflops": dense.transformer,
                         "fraction": 1.0, "by_component": dense.by_component}
    cfg.update(sampling=sampling, recipe=ex.recipe, metrics=ex.metrics, pruning=ex.pruning,
               source=ex.source, vae_fingerprint=ex.vae_fingerprint)
    return cfg


def _expert_card(b: int, blk) -> dict:
    f = blk.expert_ffns()[0]
    return {"block": b, "experts": int(f.experts_w1.shape[0]), "top_k": int(f.top_k),
            "expert_width": int(f.experts_w1.shape[1]), "permutation": f"blocks.{b}.{_param_path(blk, f)}perm"}


def _param_path(blk, module) -> str:
    for name, mod in blk.named_modules():
        if mod is module:
            return f"{name}." if name else ""
    raise VarcompressError("expert FFN not found in its block")  # unreachable for converted blocks


def write_export(ex: Exportable, out: str | os.PathLike, sampling: dict | None = None,
                 force: bool = False) -> Path:
    """Write DIR atomically (temporary directory + rename); refuse to overwrite unless force."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in ex.model.state_dict().items()}
    check_finite(sd, "model", masks=("attn_bias_for_masking",))
    config = build_config(ex, sampling)
    with atomic_dir(out, force) as tmp:
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": FORMAT})  # one key: deterministic bytes
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return Path(out)


def is_export_dir(path: str | os.PathLike) -> bool:
    cj = Path(path) / "config.json"
    if not cj.is_file():
        return False
    try:
        return json.loads(cj.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_export_config(path: str | os.PathLike) -> dict:
    d = Path(path)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise VarcompressError(f"{d}: missing config.json or model.safetensors")
    cfg = read_format_json(d / "config.json", FORMAT, FORMAT_VERSION, "exported model")
    if cfg.get("kind") not in KINDS:
        raise VarcompressError(f"{d}/config.json: kind must be one of {', '.join(KINDS)}, got {cfg.get('kind')!r}")
    return cfg


def load_export(path: str | os.PathLike, vae=None):
    """Rebuild an exported model exactly, in eval mode; a VQVAE it was not made with is refused."""
    d = Path(path)
    cfg = read_export_config(d)
    what = str(d / "model.safetensors")
    sd = read_state_dict(d / "model.safetensors")
    if cfg["kind"] == "activated":
        model = skeleton_for_weights(cfg.get("var_config"), cfg.get("convert_config"), sd, str(d))
        validate_state_dict(model, sd, what)
        check_finite(sd, what, masks=("attn_bias_for_masking",))
        model.load_state_dict(sd, strict=True, assign=True)
        model.eval()
    else:
        try:
            var_cfg = VARConfig.from_dict(cfg.get("var_config"))
        except (KeyError, TypeError, ValueError, AttributeError, VarcompressError) as e:
            raise VarcompressError(f"{d}/config.json: malformed ({first_line(e)})") from None
        model = var_from_state_dict(sd, what, num_heads=var_cfg.num_heads)
        if model.cfg.to_dict() != var_cfg.to_dict():
            raise VarcompressError(f"{d}: model.safetensors does not match the architecture in config.json")
    check_vae(cfg, vae, d)
    return model.attach_vae(vae)


def check_vae(cfg: dict, vae, where) -> None:
    """Refuse a VQVAE whose codebook is not the one recorded at export (tokens would mean other things)."""
    if vae is not None and cfg.get("vae_fingerprint") and vae_fingerprint(vae) != cfg["vae_fingerprint"]:
        raise VarcompressError(f"{where}: the VQVAE given is not the one this model was made with (codebook differs)")

