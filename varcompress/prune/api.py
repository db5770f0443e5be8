"""`prune(var, cfg)`: a dense VAR -> a training-free baseline that really computes less.

- magnitude / wanda: a plain VAR with narrower FFNs (same width in every block);
- residual-tokens / fastvar: convert's ActivatedVAR with one always-on expert and fixed
  per-scale keep counts (residual score + prev-scale fill / FastVAR's mean distance + cache);
- both / fastvar-wanda: the narrower VAR, then the same token pruning on top;
- split: the teacher on the early scales, a smaller (block- and neuron-pruned) copy after.
The FFN width / keep counts are solved so the model's transformer FLOPs (varcompress.flops,
the counter every model goes through) are at most `flops_target` of the teacher's and
within 1% of it; the result is checked, not assumed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..compare.models import Entry, load_model, parse_spec, teacher_sha256
from ..distill.recipe import load_recipe
from ..durable import check_output
from ..errors import VarcompressError
from ..flops import var_flops
from ..formats.pruned import save_pruned
from ..generate.tokens import balanced_labels, draw_token_maps
from ..models.sampler import OFFICIAL_SAMPLING
from ..resolve import default_sampling
from ..streams import derive_seed
from .config import ALIASES, PruneConfig, matched_config
from .finetune import budget_from_recipe, finetune as run_finetune, teacher_data
from .neurons import _ffns, activation_stats, neuron_scores, prune_neurons, select_neurons
from .split import build_split
from .tokens import ffn_hidden_for, set_counts, solve_counts, token_model

MATCH_TOLERANCE = 0.01


@dataclass
class PruneResult:
    model: object
    info: dict = field(default_factory=dict)


def model_gflops(model) -> float:
    """Transformer GFLOPs per image with CFG: `flops()` of activated models, var_flops of dense ones."""
    return model.flops().transformer if hasattr(model, "flops") else var_flops(model.cfg).transformer


def calibration(var, cfg: PruneConfig, sampling: dict | None = None):
    """(labels, x): `cfg.calib_samples` token maps the teacher draws (class-balanced, fixed seeds)."""
    if var.vae is None:
        raise VarcompressError("pruning with calibration needs the VQVAE (load the VAR with vae=...)")
    s = dict(sampling or OFFICIAL_SAMPLING)
    for k in ("cfg", "top_k", "top_p"):
        if getattr(cfg, f"calib_{k}") is not None:
            s[k] = getattr(cfg, f"calib_{k}")
    maps = draw_token_maps(var, balanced_labels(cfg.calib_samples, var.num_classes),
                           seed=derive_seed(cfg.seed, "calibration"), **s)
    dev = var.pos_1LC.device
    return maps.labels.to(dev), maps.x.to(dev)


def _width(var, cfg: PruneConfig, h: int, calib) -> torch.nn.Module:
    H = _ffns(var)[0].fc1.out_features
    if h < cfg.min_hidden:
        raise VarcompressError(f"flops_target {cfg.flops_target} needs FFNs of {h} neurons (< min_hidden "
                               f"{cfg.min_hidden}); it is below what neuron pruning can reach")
    h = min(h, H)
    stats = activation_stats(var, *calib) if (cfg.score == "wanda" or cfg.use_compensation) else None
    keep = select_neurons(neuron_scores(var, cfg.score, stats), h)
    return prune_neurons(var, keep, stats.means() if cfg.use_compensation else None)


def _explicit_keep(model, cfg: PruneConfig) -> None:
    if len(cfg.keep_ratio) != len(model.patch_nums):
        raise VarcompressError(f"prune config: keep_ratio has {len(cfg.keep_ratio)} entries, the model has "
                               f"{len(model.patch_nums)} scales")
    model.set_keep([float(r) for r in cfg.keep_ratio])


@torch.no_grad()
def prune(var, cfg: PruneConfig | None = None, calib=None, sampling: dict | None = None) -> PruneResult:
    """Prune the dense `var` (left untouched) to `cfg.flops_target` of its transformer FLOPs.

    `calib` = (labels, x) teacher-forcing tensors; drawn by the teacher when needed and not given.
    """
    cfg = (cfg or PruneConfig()).validate()
    ffns = _ffns(var)
    H = ffns[0].fc1.out_features
    if any(f.fc1.out_features != H for f in ffns):
        raise VarcompressError("the dense VAR has FFNs of different widths; prune expects one width")
    teacher_g = var_flops(var.cfg).transformer
    target_g = cfg.flops_target * teacher_g
    S = len(var.patch_nums)
    needs_calib = cfg.prunes_tokens or cfg.score == "wanda" or cfg.use_compensation or cfg.method == "split"
    if calib is None and needs_calib:
        calib = calibration(var, cfg, sampling)
    R, h, extra = cfg.flops_target, H, {}

    def tokens(base):
        return token_model(base, calib, cfg.sparse_scales, cfg.reconstruction, cfg.upsample, cfg.seed,
                           cfg.selector, cfg.cache_scale)

    if cfg.method in ("magnitude", "wanda"):
        h = math.floor(ffn_hidden_for(var.cfg, target_g, H) + 1e-6)
        model = _width(var, cfg, h, calib)
    elif cfg.method in ("residual-tokens", "fastvar"):
        model = tokens(var)
        if cfg.keep_ratio is not None:
            _explicit_keep(model, cfg)
        else:
            solve_counts(model, target_g, cfg.sparse_scales)
    elif cfg.method == "split":
        split = cfg.split_scale if cfg.split_scale is not None else max(1, S - 2)
        if split > S:
            raise VarcompressError(f"prune config: split_scale {split} is beyond the model's {S} scales")
        depth = cfg.small_depth if cfg.small_depth is not None else math.ceil(var.cfg.depth / 2)
        model, extra = build_split(var, target_g, split, depth, cfg.score, cfg.use_compensation, calib,
                                   cfg.min_hidden)
        h = extra["small_hidden"]
    else:  # both / fastvar-wanda: tokens take token_share of the saving, neurons fill the rest exactly
        tok = tokens(var)
        if cfg.keep_ratio is not None:
            _explicit_keep(tok, cfg)
        else:
            solve_counts(tok, teacher_g * (1 - cfg.token_share * (1 - R)), cfg.sparse_scales)
        counts = list(tok.blocks[0].keep_counts)
        h = math.floor(ffn_hidden_for(var.cfg, target_g, H, work=tok.scale_work()) + 1e-6)
        model = tokens(_width(var, cfg, h, calib))
        set_counts(model, counts)
    g = model_gflops(model)
    explicit = cfg.method in ("residual-tokens", "fastvar") and cfg.keep_ratio is not None
    if not explicit and (g > target_g * (1 + 1e-9) or g < target_g * (1 - MATCH_TOLERANCE)):
        raise VarcompressError(f"could not match flops_target {R} within {MATCH_TOLERANCE:.0%}: got "
                               f"{g / teacher_g:.4f} of the teacher's FLOPs")
    counts = list(model.blocks[0].keep_counts) if hasattr(model, "blocks") and \
        hasattr(model.blocks[0], "keep_counts") else [pn * pn for pn in var.patch_nums]
    info = {"method": cfg.method, "score": cfg.score if cfg.prunes_neurons else None,
            "compensate": cfg.use_compensation if cfg.prunes_neurons else None,
            "hidden": int(h), "teacher_hidden": int(H), "keep_counts": counts,
            "scale_tokens": [pn * pn for pn in var.patch_nums],
            "teacher_gflops": teacher_g, "gflops": g, "fraction": g / teacher_g, "target_fraction": R,
            "match_error": g / target_g - 1, "calib_samples": int(calib[0].shape[0]) if calib is not None else 0,
            **extra, "config": cfg.to_dict()}
    model.eval()
    return PruneResult(model, info)


def prune_checkpoint(ckpt: str, method: str, out, *, flops_target: float | None = None, match: str | None = None,
                     vae=None, dataset: str | None = None, finetune=None, force: bool = False,
                     progress: bool = False, log=None, **options) -> dict:
    """What `varcompress prune` does: prune the dense `ckpt` (testbed name or .pth) at `flops_target`
    or at the FLOPs of the model `match`, optionally fine-tune it with the budget of the distill
    recipe `finetune`, and save it to `out`.

    `options` are PruneConfig fields; the token settings not given follow the matched model's
    (`matched_config`). Calibration and fine-tuning data are sampled with the testbed card's settings,
    else the official ones. `log(line, err=False)` gets the progress lines (err=True: notes).
    Returns {path, info (the pruning record), finetune (its summary, or None)}.
    """
    log = log or (lambda line, err=False: None)
    check_output(out, force)
    if method in ALIASES:
        log(f"note: --method {method} is deprecated; it is {ALIASES[method]} (training-free token pruning)", err=True)
        method = ALIASES[method]
    if (flops_target is None) == (match is None):
        raise VarcompressError("give exactly one of --flops-target R and --match MODEL")
    matched_config(method, 1.0 if flops_target is None else flops_target, **options)  # bad options fail first
    budget = budget_from_recipe(finetune) if finetune is not None else None
    t = load_model(Entry("teacher", ckpt), dataset=dataset, vae_path=vae)
    if t.kind not in ("teacher", "dense"):
        raise VarcompressError(f"{ckpt}: prune needs a dense VAR, got a {t.kind} model")
    cc = {}
    if match is not None:
        flops_target, cc = _match_fraction(match, t.var, t.var.vae, t.dataset)
        log(f"matching {match}: {flops_target:.4f} of the teacher's transformer FLOPs", err=True)
    cfg = matched_config(method, float(flops_target), cc, **options)
    sampling = default_sampling(t.dataset)
    sha = teacher_sha256(ckpt)
    res = prune(t.var, cfg, sampling=sampling)
    i = res.info
    log(f"{method}: FFN width {i['hidden']}/{i['teacher_hidden']}, keep counts {i['keep_counts']}, "
        f"{i['gflops']:.4f} GFLOPs = {i['fraction']:.4f} of the teacher (target {i['target_fraction']:.4f})")
    summary = None
    if budget is not None:
        r_teacher = load_recipe(finetune)["teacher"]["checkpoint"]
        if teacher_sha256(r_teacher) != sha:
            raise VarcompressError(f"--finetune {finetune}: its teacher ({r_teacher}) is not {ckpt}")
        data = teacher_data(t.var, sha, budget, sampling, progress=progress)
        summary = run_finetune(res.model, t.var, data, budget, progress=progress)
        log(f"fine-tuned {', '.join(summary['trained'])} for {summary['steps']} steps: KL "
            f"{summary['first_loss']:.4f} -> {summary['last_loss']:.4f}")
    source = {"spec": ckpt, "sha256": sha, "testbed": t.dataset, "match": match}
    dest = save_pruned(res.model, i, out, source=source, finetune=summary, force=force)
    return {"path": dest, "info": i, "finetune": summary}


def _match_fraction(spec: str, teacher, vae, dataset) -> tuple[float, dict]:
    """FLOPs fraction (of `teacher`) of the model to match, and its convert config (token settings)."""
    m = load_model(parse_spec(spec), vae=vae, dataset=dataset)
    if m.var.cfg.embed_dim != teacher.cfg.embed_dim or tuple(m.var.patch_nums) != tuple(teacher.patch_nums):
        raise VarcompressError(f"--match {spec}: not a model of the teacher's shape")
    cc = m.info.get("convert_config") or {}
    return model_gflops(m.var) / var_flops(teacher.cfg).transformer, cc
