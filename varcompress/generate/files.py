"""`varcompress generate`: samples written to look at (PNG grid, per-image PNGs) or to score (the ImageNet
FID `.npz`, classes sharded over torchrun ranks). Images are drawn by the seeding rule of
`generate.images.iter_images`, so the torchrun `.npz` equals the one-process one.
"""
from __future__ import annotations

import contextlib
import json
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from PIL import Image

from ..dist import Dist
from ..durable import atomic_dir, atomic_write, check_output
from ..errors import VarcompressError
from ..models.sampler import OFFICIAL_SAMPLING
from ..resolve import default_sampling, resolve_model
from ..version import __version__
from ..viz import save_grid
from .images import SEEDING, generate_images, iter_images


def _refuse_existing(out: Path, force: bool) -> None:
    check_output(out, force)


def write_samples_dir(images: np.ndarray, classes, n_per_class: int, out, manifest: dict,
                      per_image: bool = False, force: bool = False) -> Path:
    """grid.png (a row per class), optionally class{c:04d}/{i:05d}.png, and samples.json: all or nothing."""
    out = Path(out)
    with atomic_dir(out, force) as tmp:
        save_grid(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, tmp / "grid.png", nrow=n_per_class)
        if per_image:
            for j, img in enumerate(images):
                folder = tmp / f"class{classes[j // n_per_class]:04d}"
                folder.mkdir(exist_ok=True)
                Image.fromarray(img).save(folder / f"{j % n_per_class:05d}.png")
        (tmp / "samples.json").write_text(json.dumps(manifest, indent=1) + "\n")
        _refuse_existing(out, force)  # someone may have written it while we sampled
    return out


def _together(d: Dist, fn, main_only: bool = False):
    """Run fn on every rank (or on rank 0 only); a failure on any rank is raised on all of them,
    as the same one line, so no rank waits for a peer that has given up."""
    err = out = None
    if d.is_main or not main_only:
        try:
            out = fn()
        except (VarcompressError, OSError) as e:
            err = str(e)
    if d.world > 1:
        errs = [None] * d.world
        tdist.all_gather_object(errs, err)
        err = next((e for e in errs if e is not None), None)
    if err is not None:
        raise VarcompressError(err)
    return out


def _write_shard(tmp: str, chunks, total: int) -> None:
    mm, pos = None, 0
    for imgs in chunks:
        if mm is None:  # the image size is known once the first chunk is drawn
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, *imgs.shape[1:]))
        mm[pos:pos + len(imgs)] = imgs
        pos += len(imgs)
    mm.flush()


def _merge(tmp: str, shards: list[Path], classes: list[int], n: int) -> None:
    """Stream the shards into one .npz in class order (np.savez's layout) without holding all images."""
    parts = [np.load(p, mmap_mode="r") for p in shards]
    world = len(parts)
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(classes) * n, *parts[0].shape[1:])}
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for i in range(len(classes)):  # class i was drawn by rank i % world, as its (i // world)-th class
                f.write(parts[i % world][(i // world) * n:(i // world + 1) * n].tobytes())
        with zf.open("arr_1.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.repeat(np.asarray(classes, np.int64), n))


def fid_npz(var, classes, n_per_class: int, out, d: Dist, *, force: bool = False, progress: bool = False,
            **sampling) -> Path:
    """The FID sample file of ADM's class-conditional sampler: `arr_0` uint8 (N, H, W, 3) grouped
    by class in `classes` order, `arr_1` the labels (N,) int64 (as metrics.write_samples_npz).

    Under torchrun rank r draws classes[r::world] into a shard next to `out`; rank 0 merges the
    shards into `out` atomically. Every rank calls this; `sampling` goes to `iter_images`.
    """
    out, classes = Path(out), [int(c) for c in classes]
    world = min(d.world, len(classes))  # ranks past the class count draw nothing
    shards = [out.parent / f".{out.name}.rank{r}.npy" for r in range(world)]
    mine = classes[d.rank::d.world]
    _together(d, lambda: _refuse_existing(out, force), main_only=True)
    try:
        chunks = iter_images(var, mine, n_per_class, progress=progress and d.is_main, **sampling)
        write = partial(_write_shard, chunks=chunks, total=len(mine) * n_per_class)
        _together(d, lambda: atomic_write(shards[d.rank], write) if mine else None)
        merge = partial(_merge, shards=shards, classes=classes, n=n_per_class)
        _together(d, lambda: atomic_write(out, merge, force=force), main_only=True)
    finally:
        if mine:
            with contextlib.suppress(OSError):  # a shard that could not be written may not be removable either
                shards[d.rank].unlink(missing_ok=True)
    return out


def parse_classes(spec: str | None, num_classes: int) -> list[int]:
    """'0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9] (sorted, no repeats); None -> every class."""
    if spec is None:
        return list(range(num_classes))
    chosen = set()
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise VarcompressError(f"--classes: expected classes and ranges like 0,3,5-9, got {spec!r}") from None
        if not 0 <= a <= b < num_classes:
            raise VarcompressError(f"--classes: {part.strip()!r} is not a class or range within 0-{num_classes - 1}")
        chosen.update(range(a, b + 1))
    return sorted(chosen)


def sample_model(model: str, vae=None, dataset: str | None = None, classes: str | None = None,
                 n_per_class: int = 8, seed: int = 0, batch: int = 50, out=None, per_image: bool = False, npz=None,
                 force: bool = False, progress: bool = False, d: Dist | None = None, **given) -> dict:
    """What `varcompress generate` does: resolve `model`, draw `n_per_class` images of each of `classes`
    ('0,3,5-9', default all) and write an FID `.npz` (`npz`; under torchrun every rank calls this with
    its `d`, `dist.dist_session`) or a samples folder (`out`: grid.png, samples.json, with
    `per_image` the PNGs). Sampling settings (cfg, top_k, top_p) given as None are the testbed card's,
    else the official ones. Returns what was written:
    {path, classes, n_per_class, n_images, image_size (None for an .npz)}.
    """
    d = d or Dist()
    m = resolve_model(model, vae, dataset)
    if m.var.vae is None:
        raise VarcompressError(f"{model}: generation needs the model's VQVAE (pass --vae)")
    cls = parse_classes(classes, m.var.num_classes)
    s = default_sampling(m.dataset, **given)
    sampling = {k: type(v)(s[k]) for k, v in OFFICIAL_SAMPLING.items()}
    var = m.var.to(d.device)
    var.vae.to(d.device)
    done = {"classes": cls, "n_per_class": n_per_class, "n_images": len(cls) * n_per_class, "image_size": None}
    if npz is not None:
        path = fid_npz(var, cls, n_per_class, npz, d, force=force, progress=progress, seed=seed, batch=batch,
                       **sampling)
        return {"path": path, **done}
    images = generate_images(var, cls, n_per_class, seed=seed, batch=batch, progress=progress, **sampling)
    manifest = {"format": "varcompress-samples", "varcompress_version": __version__, "model": m.label,
                "kind": m.kind, "dataset": m.dataset, "classes": cls, "n_per_class": n_per_class, "seed": seed,
                "batch": batch, "sampling": sampling, "seeding": SEEDING, "device": str(d.device),
                "image_size": list(images.shape[1:3]), "grid": "grid.png",
                "images": "class{class:04d}/{index:05d}.png" if per_image else None}
    path = write_samples_dir(images, cls, n_per_class, out, manifest, per_image=per_image, force=force)
    return {"path": path, **done, "n_images": len(images), "image_size": list(images.shape[1:3])}
