"""Public entry points: convert a dense VAR, save and load the activated model.

On disk an activated model is a directory: `model.safetensors` (every tensor,
expert permutations included) and `config.json` (VARConfig, the resolved
ConvertConfig, varcompress version, source checkpoint sha256, budget), written to a
temporary directory and renamed into place.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__
from ..checkpoint import atomic_dir, check_finite, read_format_json, read_state_dict
from ..errors import VarcompressError
from ..models.var import VARConfig
from ..streams import derive_seed
from ..var_io import build_var, check_var_config, validate_state_dict
from .activated import ActivatedVAR
from .budget import allocate
from .build import build_gated_block
from .calibrate import bar_off, draw_calibration, iterate_teacher_blocks, teacher_logits, with_uncond
from .config import ConvertConfig, keep_counts
from .fx_pass import find_ffns

FORMAT = "varcompress-activated"
FORMAT_VERSION = 1


@torch.no_grad()
def convert(var, cfg: ConvertConfig | None = None, calib=None, progress: bool = False) -> ActivatedVAR:
    """Dense VAR -> ActivatedVAR, calibrated on teacher-forcing tensors `calib` = (labels, x).

    Without `calib` the teacher draws `cfg.calib_samples` token maps itself (needs its VQVAE).
    The teacher is not modified. `model.convert_report` holds the fit statistics. With
    `progress`, every phase shows a tqdm bar with its ETA (where stderr is a terminal).
    """
    cfg = (cfg or ConvertConfig()).validate()
    sites = find_ffns(var)
    depth, S = len(var.blocks), len(var.patch_nums)
    for site in sites:
        cfg.check_model(depth, S, site.hidden)
    if calib is None:
        calib = draw_calibration(var, cfg.calib_samples, derive_seed(cfg.seed, "calibration"), cfg.calib_cfg, cfg.calib_top_k, cfg.calib_top_p, progress=progress)
    labels, x = _check_calib(var, calib)
    lab_u, x_u = with_uncond(var, labels, x)
    fc1_names = [[s.fc1 for s in sites if s.index == b] for b in range(depth)]
    counts = keep_counts(var.patch_nums, cfg.keep_per_scale(S))
    ks = cfg.top_k_per_block(depth)
    blocks, stats = [], []
    was_training = var.training
    var.eval()
    steps = sum(2 + 2 * len(names) for names in fc1_names)  # capture, (clustering, router) per FFN, selector
    bar = tqdm(total=steps, desc="convert: calibrating blocks", unit="step", disable=bar_off(progress))
    try:
        for b, cap in iterate_teacher_blocks(var, lab_u, x_u, fc1_names, cfg.calib_tokens, cfg.seed):
            st = {}
            done = _phase_done(bar, b)
            done("capture")
            blocks.append(build_gated_block(var.blocks[b], b, cfg, var.patch_nums, var.cfg.norm_eps,
                                            counts, ks[b], cap, st, on_phase=done))
            stats.append(st)
        bar.close()
        model = ActivatedVAR.from_dense(var, cfg, blocks)
        report = {"blocks": stats, "calib_samples": int(labels.shape[0])}
        if cfg.flops_target is not None:
            n = min(cfg.sensitivity_samples, labels.shape[0])
            sl, sx = with_uncond(var, labels[:n], x[:n])
            t = teacher_logits(var, sl, sx) if cfg.allocation == "sensitivity" else None
            report["allocation"] = allocate(model, cfg.flops_target, cfg.allocation, (sl, sx), t, progress)
    finally:
        bar.close()
        var.train(was_training)
    report["budget"] = model.budget()
    model.convert_report = report
    return model


def default_output(spec: str) -> Path:
    """Where `convert_checkpoint` writes by default: NAME-activated in the current directory."""
    p = Path(spec)
    return Path(f"{p.stem if p.suffix else p.name}-activated")


def testbed_calibration(dataset: str | None) -> dict:
    """The ConvertConfig calibration sampling of a testbed teacher: its card's settings (top_p 0, off,
    as 1.0); {} for a model of no testbed (the ConvertConfig defaults, the official settings)."""
    if dataset is None:
        return {}
    from ..testbed.teachers import teacher_card

    s = teacher_card(dataset).get("sampling", {})
    return dict(calib_cfg=s.get("cfg", 1.5), calib_top_k=s.get("top_k", 0), calib_top_p=s.get("top_p", 0.0) or 1.0)


def convert_checkpoint(spec: str | None = None, out: str | os.PathLike | None = None, vae=None, *,
                       force: bool = False, progress: bool = False, log=None, **options):
    """Convert a dense model and save it: what `varcompress convert` does.

    `spec`: a testbed name (default "digits"), a VAR .pth/.safetensors or an exported dense model;
    `out`: default `default_output(spec)`; `options`: ConvertConfig fields (calibration sampling
    defaults to the testbed teacher's, `testbed_calibration`). `log` gets one line before the
    conversion starts. Returns (the dense VAR, the activated model, the output directory).
    """
    from ..checkpoint import sha256_file
    from ..durable import check_output
    from ..resolve import resolve_model
    from ..testbed.teachers import teacher_paths

    spec = spec or "digits"
    out = out or default_output(spec)
    check_output(out, force)
    m = resolve_model(spec, vae)
    if m.kind != "dense":
        raise VarcompressError(f"{spec}: {'an' if m.kind == 'activated' else 'a'} {m.kind} model; convert takes a "
                               "dense VAR checkpoint")
    if m.vae is None:
        raise VarcompressError(f"{spec}: pass --vae so the teacher can draw calibration samples")
    cfg = ConvertConfig(**{**testbed_calibration(m.dataset), **options})  # the options given win
    if log is not None:
        log(f"converting {m.label}: {cfg.experts} experts, calibrating on {cfg.calib_samples} teacher samples")
    model = convert(m.var, cfg, progress=progress)
    source_file = teacher_paths(m.dataset)["var"] if m.dataset and not Path(spec).exists() else Path(spec)
    if source_file.is_dir():  # an exported dense model
        source_file = source_file / "model.safetensors"
    save_activated(model, out, source_sha256=sha256_file(source_file), force=force,
                   source={"checkpoint": str(source_file), "testbed": m.dataset})
    return m.var, model, Path(out)


def _phase_done(bar, b: int):
    """Advance the block bar by one finished phase of block b, naming it."""
    def done(phase: str) -> None:
        bar.set_postfix_str(f"block {b} {phase}")
        bar.update(1)
    return done


def _check_calib(var, calib) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        labels, x = calib
    except (TypeError, ValueError):
        raise VarcompressError("calib must be a pair (labels (B,), x_BLCv_wo_first_l (B, L-1, Cvae))") from None
    want = (var.L - var.first_l, var.Cvae)
    if x.dim() != 3 or tuple(x.shape[1:]) != want or labels.shape != (x.shape[0],):
        raise VarcompressError(f"calib tensors: expected labels (B,) and x (B, {want[0]}, {want[1]}), "
                               f"got {tuple(labels.shape)} and {tuple(x.shape)}")
    dev = var.pos_1LC.device
    return labels.to(dev).long(), x.to(dev).float()


# ---- save / load ------------------------------------------------------------------------------
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
    from safetensors.torch import save_file

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
    counts = keep_counts(var_cfg.patch_nums, ccfg.keep_per_scale(S))
    ks = ccfg.top_k_per_block(depth)
    blocks = [build_gated_block(blk, b, ccfg, var_cfg.patch_nums, var_cfg.norm_eps, counts, ks[b])
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
