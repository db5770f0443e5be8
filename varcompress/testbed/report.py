"""Is a testbed teacher fit to tell compression methods apart? The numbers that say so.

`teacher_report(name)` measures, for a shipped (or freshly trained) teacher:
- its tokenizer on held-out real images: PSNR, a colour error and the saturation kept;
- how forgiving the set's classifier is (accuracy on grey / blurred / colour-shuffled
  real images: `metrics.corruptions`);
- floor and ceiling of the testbed metrics at the sample count used;
- the teacher's accuracy / FID / precision / recall over several sampling seeds against
  one fixed real reference (mean and spread: the noise later tables are judged by);
- the last-scale ablation: the same teacher samples decoded without their last one or two
  scales (the tokenizer's cumulative map of the earlier scales, upsampled), on the
  teacher's samples and on real images. If quality barely moves, the set is too coarse
  for token sparsity to be measured on it;
- the last scale redrawn: real images' true tokens for every earlier scale, the last one
  drawn by the teacher (teacher forcing, card sampling). It isolates how well the teacher
  draws the last scale token by token (it located the v1 scenes checks failure);
- accuracy per class, so a miss can be traced to the classes that carry it.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from PIL import Image

from ..evaluate import testbed_evaluator
from ..generate.images import per_class_labels
from ..generate.tokens import draw_token_maps
from ..metrics.corruptions import corruption_accuracy
from ..metrics.testbed import reference_scores
from ..models.sampler import sample_top_k_top_p
from ..streams import derive_seed
from ..viz import concat_grids_side_by_side, grid_array, save_grid
from .datasets import at_most_split, get_dataset, get_spec
from .teachers import load_teacher, teacher_card


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mx, mn = x.max(1).values, x.min(1).values
    return (mx - mn) / mx.clamp_min(1e-6)


def _decode_last_three(vae, idx: list[torch.Tensor]) -> list[torch.Tensor]:
    """Images in [-1,1] from all scales, without the last, without the last two: only those three
    cumulative maps go through the decoder (the quantizer's sums are cheap, the decoder is not)."""
    f_hats = vae.quantize.idxBl_to_fhat(idx, same_shape=True, last_one=False)
    return [vae.fhat_to_img(f) for f in (f_hats[-1], f_hats[-2], f_hats[-3])]


@torch.no_grad()
def tokenizer_quality(vae, name: str, n: int = 500, seed: int = 0, batch: int = 100) -> dict:
    """PSNR, colour error (8x8-pooled RGB, 0-255 units) and saturation ratio on real test images,
    with all scales and with the last one / two scales left out."""
    n = at_most_split(name, "test", n)
    x, _ = get_dataset(name, "test", n=n, seed=seed)
    sums = {k: {"mse": 0.0, "colour": 0.0, "sat": 0.0} for k in ("all", "without_last", "without_last_two")}
    for i in range(0, n, batch):
        real = x[i:i + batch]
        for key, img in zip(sums, _decode_last_three(vae, vae.img_to_idxBl(real * 2 - 1))):
            rec = (img + 1) / 2
            s = sums[key]
            s["mse"] += float(((rec - real) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10).log10().sum())
            pool = torch.nn.functional.avg_pool2d
            s["colour"] += float((pool(rec, 8) - pool(real, 8)).abs().mean(dim=(1, 2, 3)).sum()) * 255
            s["sat"] += float(_saturation(rec).mean(dim=(1, 2)).sum())
    sat_real = float(_saturation(x).mean())   # 0 for a grey set: no ratio then
    return {key: {"psnr_db": round(-10 * s["mse"] / n, 2), "colour_error_255": round(s["colour"] / n, 2),
                  "saturation_ratio": round(s["sat"] / n / sat_real, 3) if sat_real > 1e-3 else None}
            for key, s in sums.items()} | {"n": n}


def sample_with_tokens(var, labels: torch.Tensor, seed: int, sampling: dict, batch: int = 50,
                       progress: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Teacher samples in [0,1] and their token maps (one tensor per scale); batches of 50 draw with the
    g_seeds `generate.images.sample_classes` uses, so `varcompress eval` sees the same images."""
    maps = draw_token_maps(var, labels, seed=seed, batch=batch, decode=True, progress=progress, **sampling)
    return maps.images, list(maps.idx.split([pn * pn for pn in var.vae.patch_nums], dim=1))


def _spread(rows: list[dict]) -> dict:
    keys = ("accuracy", "fid", "precision", "recall")
    return {k: {"mean": statistics.fmean(r[k] for r in rows),
                "std": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0,
                "values": [r[k] for r in rows]} for k in keys}


REDRAW_INDEX = 1 << 19   # in the report seed's sampling stream, far above its batch offsets (n < 2**19)


def _tokens(vae, images: torch.Tensor, batch: int = 100) -> list[torch.Tensor]:
    """Token maps (one (N, pn*pn) tensor per scale) of images in [0,1]."""
    return [torch.cat(p) for p in zip(*(vae.img_to_idxBl(images[i:i + batch] * 2 - 1)
                                        for i in range(0, len(images), batch)))]


@torch.no_grad()
def redraw_last_scale(var, idx: list[torch.Tensor], labels: torch.Tensor, sampling: dict, seed: int,
                      batch: int = 50) -> torch.Tensor:
    """The last scale's tokens (N, pn*pn) drawn by the teacher from the given tokens of every earlier
    scale: teacher forcing, then the sampler's CFG (its ramp cfg * si / (S - 1) is cfg at the last
    scale) and top-k / top-p."""
    vae, n_last, cfg = var.vae, idx[-1].shape[1], sampling["cfg"]
    rng = torch.Generator().manual_seed(derive_seed(seed, "sampling", REDRAW_INDEX))
    out = []
    for i in range(0, len(labels), batch):
        x, lab = vae.idxBl_to_var_input([t[i:i + batch] for t in idx]), labels[i:i + batch]
        cond = var(lab, x)[:, -n_last:]
        uncond = var(torch.full_like(lab, var.num_classes), x)[:, -n_last:]
        out.append(sample_top_k_top_p((1 + cfg) * cond - cfg * uncond, sampling["top_k"], sampling["top_p"], rng))
    return torch.cat(out)


def _decode(vae, idx: list[torch.Tensor], batch: int = 100) -> torch.Tensor:
    return torch.cat([(vae.idxBl_to_img([t[i:i + batch] for t in idx], last_one=True) + 1) / 2
                      for i in range(0, len(idx[0]), batch)]).clamp(0, 1)


@torch.no_grad()
def scale_ablation(vae, evaluator, labels: torch.Tensor, idx: list[torch.Tensor], real_idx: list[torch.Tensor],
                   real_labels: torch.Tensor, batch: int = 100) -> tuple[dict, dict]:
    """Metrics of the teacher's samples (and of real images' tokens) decoded with all scales and
    without the last one / two; also returns the decoded images for a picture."""
    out, pictures = {}, {}
    for source, tokens, lab in (("teacher", idx, labels), ("real", real_idx, real_labels)):
        decoded = {"all": [], "without_last": [], "without_last_two": []}
        for i in range(0, len(lab), batch):
            for key, img in zip(decoded, _decode_last_three(vae, [t[i:i + batch] for t in tokens])):
                decoded[key].append(((img + 1) / 2).clamp(0, 1))
        decoded = {k: torch.cat(v) for k, v in decoded.items()}
        out[source] = {k: evaluator.evaluate(v, lab) for k, v in decoded.items()}
        pictures[source] = decoded
    return out, pictures


def teacher_report(name: str, n_per_class: int = 50, seeds: tuple[int, ...] = (0, 1, 2), n_real: int = 2000,
                   progress: bool = True) -> tuple[dict, dict]:
    """The report (JSON-able) and its pictures: samples per class and the ablation columns.
    `n_real` real test images go to the tokenizer and classifier checks."""
    var, vae = load_teacher(name)
    sampling = dict(teacher_card(name)["sampling"])
    labels = per_class_labels(var.num_classes, n_per_class)
    n = len(labels)
    evaluator = testbed_evaluator(name, n, 0)   # one fixed real reference for every row
    runs, first = [], None
    for s in seeds:
        images, idx = sample_with_tokens(var, labels, derive_seed(s, "sampling"), sampling, progress=progress)
        runs.append(evaluator.evaluate(images, labels, per_class=True))
        if first is None:
            first = (images, idx)
    real, real_labels = get_dataset(name, "test", n=n, seed=1)   # unlimited sets: other images than the reference
    real_idx = _tokens(vae, real)
    ablation, pictures = scale_ablation(vae, evaluator, labels, first[1], real_idx, real_labels)
    redrawn = _decode(vae, real_idx[:-1] + [redraw_last_scale(var, real_idx, real_labels, sampling, seeds[0])])
    redrawn_scores = evaluator.evaluate(redrawn, real_labels, per_class=True)
    per_class = {"teacher": torch.tensor([r.pop("class_accuracy") for r in runs]).mean(0).tolist(),
                 "real_last_scale_redrawn": redrawn_scores.pop("class_accuracy")}
    ablation["real"]["last_scale_redrawn"] = redrawn_scores
    report = {
        "dataset": name, "sampling": sampling, "n_per_class": n_per_class, "n": n, "seeds": list(seeds),
        "teacher": {"per_seed": runs, **_spread(runs)},
        "class_names": list(get_spec(name).class_names), "per_class_accuracy": per_class,
        "reference": reference_scores(name, n),
        "classifier_corruptions": corruption_accuracy(name, n=n_real),
        "tokenizer": tokenizer_quality(vae, name, n=n_real),
        "scale_ablation": ablation,
    }
    return report, {"samples": first[0], **pictures}


def _row(label: str, m: dict) -> str:
    return f"| {label} | {m['accuracy']:.3f} | {m['fid']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} |"


def report_markdown(r: dict) -> str:
    """The report as tables a reader can paste into the docs."""
    t, ref = r["teacher"], r["reference"]
    lines = [f"# {r['dataset']} teacher: {r['n']} samples ({r['n_per_class']}/class), sampling {r['sampling']}", "",
             "| model | accuracy | FID | precision | recall |", "|---|---|---|---|---|",
             _row("floor (real vs real)", ref["floor"]), _row("ceiling (class mean + noise)", ref["ceiling"])]
    for s, m in zip(r["seeds"], t["per_seed"]):
        lines.append(_row(f"teacher, sampling seed {s}", m))
    lines.append(f"| teacher, mean +- std over {len(r['seeds'])} seeds | {t['accuracy']['mean']:.3f} +- "
                 f"{t['accuracy']['std']:.3f} | {t['fid']['mean']:.2f} +- {t['fid']['std']:.2f} | "
                 f"{t['precision']['mean']:.3f} | {t['recall']['mean']:.3f} |")
    span = ref["ceiling"]["fid"] - ref["floor"]["fid"]
    lines += ["", f"Teacher FID at {(t['fid']['mean'] - ref['floor']['fid']) / span:.1%} of the way from floor "
              "to ceiling.", "", "Last-scale ablation (the same tokens decoded without their last scales):", "",
              "| tokens | scales | accuracy | FID | precision | recall |", "|---|---|---|---|---|---|"]
    for source, rows in r["scale_ablation"].items():
        for key, m in rows.items():
            lines.append(_row(f"{source} | {key.replace('_', ' ')}", m))
    pc = r["per_class_accuracy"]
    lines += ["", f"Accuracy per class: the teacher's samples (all {len(r['seeds'])} seeds) and real images whose "
              "last scale the teacher redrew from their true earlier tokens:", "",
              "| class | teacher | real, last scale redrawn |", "|---|---|---|"]
    lines += [f"| {c} | {a:.3f} | {b:.3f} |" for c, a, b in zip(r["class_names"], pc["teacher"],
                                                                  pc["real_last_scale_redrawn"])]
    tok = r["tokenizer"]
    lines += ["", f"Tokenizer on {tok['n']} held-out real images:", "",
              "| scales | PSNR (dB) | colour error (0-255, 8x8 pooled) | saturation kept |", "|---|---|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v['psnr_db']} | {v['colour_error_255']} | {v['saturation_ratio']} |"
              for k, v in tok.items() if k != "n"]
    lines += ["", "Classifier accuracy on corrupted real test images: " +
              ", ".join(f"{k} {v:.3f}" for k, v in r["classifier_corruptions"].items()), ""]
    return "\n".join(lines)


def write_report(r: dict, pictures: dict, out: Path) -> None:
    """report.json, report.md, samples.png (8 per class, a row per class) and scale_ablation.png."""
    out = Path(out)
    (out / "report.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(r))
    n_pc = r["n_per_class"]
    per_class = min(8, n_pc)
    pick = torch.cat([torch.arange(c * n_pc, c * n_pc + per_class) for c in range(r["n"] // n_pc)])
    save_grid(pictures["samples"][pick], out / "samples.png", nrow=per_class, upscale=2)
    two = torch.cat([torch.arange(c * n_pc, c * n_pc + min(2, n_pc)) for c in range(r["n"] // n_pc)])
    columns = [grid_array(pictures["teacher"][k][two], nrow=min(2, n_pc), upscale=2)
               for k in ("all", "without_last", "without_last_two")]
    Image.fromarray(concat_grids_side_by_side(columns)).save(out / "scale_ablation.png")
