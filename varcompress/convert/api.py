"""`convert(var, cfg)`: a dense VAR -> ActivatedVAR, calibrated on teacher token maps; and
`convert_checkpoint`, what `varcompress convert` does (resolve the model, convert, save it in the
activated-model directory format of `formats.activated`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm import tqdm

from ..activated.build import block_reconstruction, build_gated_block
from ..activated.config import ConvertConfig, keep_counts
from ..activated.fx_pass import find_ffns
from ..activated.model import ActivatedVAR
from ..checkpoint import sha256_file
from ..durable import check_output
from ..errors import VarcompressError
from ..formats.activated import save_activated
from ..models.var import with_uncond
from ..resolve import resolve_model
from ..streams import derive_seed
from ..testbed.teachers import teacher_card, teacher_paths
from .budget import allocate
from .calibrate import bar_off, calibration_data, iterate_teacher_blocks, teacher_logits


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
        calib = calibration_data(var, cfg.calib_samples, derive_seed(cfg.seed, "calibration"), cfg.calib_cfg, cfg.calib_top_k, cfg.calib_top_p, progress=progress)
    labels, x = _check_calib(var, calib)
    lab_u, x_u = with_uncond(var, labels, x)
    fc1_names = [[s.fc1 for s in sites if s.index == b] for b in range(depth)]
    counts = [keep_counts(var.patch_nums, r) for r in cfg.keep_per_block(depth, S)]
    ks = cfg.top_k_per_block(depth)
    blocks, stats = [], []
    was_training = var.training
    var.eval()
    steps = sum(2 + 2 * len(names) for names in fc1_names)  # capture, (clustering, router) per FFN, selector
    bar = tqdm(total=steps, desc="convert: calibrating blocks", unit="step", disable=bar_off(progress))
    try:
        rec = block_reconstruction(cfg, var.patch_nums) if cfg.selector == "learned" else None
        for b, cap in iterate_teacher_blocks(var, lab_u, x_u, fc1_names, cfg.calib_tokens, rec, cfg.seed):
            st = {}
            done = _phase_done(bar, b)
            done("capture")
            blocks.append(build_gated_block(var.blocks[b], b, cfg, var.patch_nums, var.cfg.norm_eps,
                                            counts[b], ks[b], cap, st, on_phase=done))
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
