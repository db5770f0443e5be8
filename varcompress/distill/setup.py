"""Building what a run needs: the frozen teacher, the token data, the student.

The student is built once (convert on rank 0, calibrated on the first
`calib_samples` maps of the training data) and saved to out_dir/student_init; every rank
then loads that directory, so all ranks (and every resumed run) start from identical
weights without converting again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..activated.config import ConvertConfig
from ..checkpoint import sha256_file
from ..convert.api import convert
from ..errors import VarcompressError
from ..formats.activated import load_activated, read_activated_config, save_activated
from ..resolve import TESTBED_NAMES, LoadedModel, default_sampling, resolve_model
from ..testbed.teachers import teacher_paths
from ..vae_io import load_vae
from ..var_io import load_var
from .data import default_cache_dir, draw_teacher_shards, encode_image_shards, image_cache, teacher_cache, to_var_input


@dataclass
class Teacher:
    var: object
    vae: object
    dataset: str | None
    var_path: Path
    vae_path: Path | None
    sha256: str


def load_teacher_for(r: dict, device: torch.device) -> Teacher:
    """Load the dense teacher (frozen, eval) and fill the recipe's sampling defaults in place."""
    spec, vae = r["teacher"]["checkpoint"], r["teacher"]["vae"]
    if Path(spec).is_dir():
        raise VarcompressError(f"teacher.checkpoint: {spec} is a model directory; the teacher must be a dense "
                               "VAR (.pth) or a testbed name")
    testbed = spec in TESTBED_NAMES and not Path(spec).exists()
    if not testbed and vae is None:
        raise VarcompressError("teacher.vae: missing (required for a .pth teacher: its VQVAE checkpoint)")
    if testbed:
        m = resolve_model(spec)
    else:  # the VQVAE takes the VAR's scale schedule (it is not stored in the VQVAE file)
        dense = load_var(spec)
        m = LoadedModel(dense.attach_vae(load_vae(vae, patch_nums=dense.patch_nums)), dense.vae, spec, None, "dense")
    var_path = teacher_paths(spec)["var"] if testbed else Path(spec)
    vae_path = teacher_paths(spec)["vae"] if testbed else Path(vae)
    var = m.var.to(device).eval()
    var.vae.to(device)
    for p in var.parameters():
        p.requires_grad_(False)
    sampling = default_sampling(m.dataset)
    for k in ("cfg", "top_k", "top_p"):
        if r["data"][k] is None:
            r["data"][k] = sampling[k]
    return Teacher(var, m.vae, m.dataset, var_path, vae_path, sha256_file(var_path))


def _sampling(r: dict) -> dict:
    return {k: r["data"][k] for k in ("cfg", "top_k", "top_p")}


def load_data(r: dict, t: Teacher, d, on_main):
    """(training TokenSet, held-out teacher TokenSet or None); rank 0 fills the shard cache."""
    dr, progress = r["data"], r["run"]["progress"]
    root = Path(dr["cache_dir"]) if dr["cache_dir"] else default_cache_dir()
    if dr["source"] == "teacher":
        cache = teacher_cache(root, t.sha256, _sampling(r), dr["count"], dr["seed"], dr["shard_size"])
        fill = lambda: cache.complete() or draw_teacher_shards(cache, t.var, _sampling(r), progress)  # noqa: E731
    else:
        res = t.vae.patch_nums[-1] * t.vae.downsample_ratio
        cache, files, labels = image_cache(root, dr["path"], sha256_file(t.vae_path), res, dr["count"],
                                           dr["seed"], dr["shard_size"])
        if max(labels) >= t.var.num_classes:
            raise VarcompressError(f"data.path: {max(labels) + 1} class folders, the teacher has "
                                   f"{t.var.num_classes} classes")
        fill = lambda: cache.complete() or encode_image_shards(cache, files, labels, t.vae, res,  # noqa: E731
                                                               progress=progress)
    held = None
    if r["run"]["eval_every"]:
        held = teacher_cache(root, t.sha256, _sampling(r), r["eval"]["held_out"], dr["seed"], dr["shard_size"],
                             purpose="held_out")

    def fill_all():
        with torch.no_grad():
            fill()
            if held is not None and not held.complete():
                draw_teacher_shards(held, t.var, _sampling(r), progress)

    on_main(d, fill_all)
    data = cache.load()
    if data.idx.shape[1] != t.var.L:
        raise VarcompressError(f"{cache.dir}: token maps have {data.idx.shape[1]} tokens, the teacher {t.var.L}")
    return data, (held.load() if held is not None else None)


def check_student(r: dict, t: Teacher) -> None:
    """Fail before any output is written: a student spec that cannot fit this teacher."""
    if r["student"]["from"] is not None:
        cfg = read_activated_config(r["student"]["from"])
        vc = cfg.get("var_config")
        if isinstance(vc, dict):
            vc = {k: v for k, v in vc.items() if k != "extra"}  # older cards carry an unused "extra": {}
        if vc != t.var.cfg.to_dict():
            raise VarcompressError(f"student.from: {r['student']['from']} was not converted from a VAR of the "
                                   "teacher's shape")
        return
    try:
        ConvertConfig.from_dict(r["student"]["convert"]).check_model(
            t.var.cfg.depth, len(t.var.patch_nums), t.var.blocks[0].ffn.fc1.out_features)
    except VarcompressError as e:
        raise VarcompressError(f"student.convert: {e}") from None


def build_student(r: dict, t: Teacher, data, out: Path, d, on_main):
    """The initial student on every rank (converted once on rank 0 and saved to student_init)."""
    if r["student"]["from"] is not None:
        student = load_activated(r["student"]["from"], vae=t.vae)  # shape checked by check_student
    else:
        init = out / "student_init"

        def make():
            if (init / "config.json").exists():
                return
            cfg = ConvertConfig.from_dict(r["student"]["convert"])
            n = min(cfg.calib_samples, len(data))
            with torch.no_grad():
                x = to_var_input(t.vae, t.var.begin_ends, data.idx[:n].to(t.var.pos_1LC.device))
            model = convert(t.var, cfg, calib=(data.labels[:n], x))
            save_activated(model, init, source_sha256=t.sha256, force=True)

        on_main(d, make)
        student = load_activated(init, vae=t.vae)
    depth = len(student.blocks)
    for i, st in enumerate(r["stages"]):
        fb = st["losses"]["feature"]["blocks"]
        if fb != "all" and any(b >= depth for b in fb):
            raise VarcompressError(f"stages[{i}].losses.feature.blocks: the student has {depth} blocks (0..{depth - 1})")
    return student.to(d.device)
