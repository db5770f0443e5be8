"""Distillation data: multi-scale token maps, made once and cached in safetensors shards.

- `source: teacher`: the teacher draws class-balanced samples itself with the recipe's
  cfg / top_k / top_p (shard i holds samples [i*S, (i+1)*S), drawn from `streams.derive_seed(seed, purpose, i*S)`).
- `source: images`: an image folder (one sub-folder per class, sorted names = class ids)
  resized/centre-cropped to the VQVAE resolution and encoded into token maps.
Shards hold `labels` (int64) and `idx` (N, L) token ids (int16 when V <= 32767); they go to
`cache_dir/<kind>-<hash>/` where the hash covers what determines the tokens (teacher or
VQVAE sha256, sampling, count, seed, files). Every shard is written atomically and the
manifest last, so an interrupted draw resumes at the first missing shard.
Batches are a pure function of (seed, step): an epoch-wise permutation of the set.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from ..checkpoint import read_state_dict
from ..durable import atomic_write, remove_stale_temps
from ..errors import VarcompressError
from ..generate.tokens import balanced_labels, draw_token_maps
from ..streams import derive_seed
from ..training.resume import step_generator

FORMAT_VERSION = 1
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class TokenSet:
    labels: torch.Tensor  # (N,) int64
    idx: torch.Tensor     # (N, L) token ids

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_cache_dir() -> Path:
    root = os.environ.get("VARCOMPRESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "varcompress"
    return Path(root) / "tokens"


def _key(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **fields}, sort_keys=True).encode()).hexdigest()[:20]


class ShardCache:
    """A directory of `shard_XXXXX.safetensors` + `manifest.json` (written last)."""

    def __init__(self, root: Path, kind: str, fields: dict, count: int, shard_size: int):
        self.dir = Path(root) / f"{kind}-{_key(fields)}"
        self.fields, self.count, self.shard_size = fields, count, shard_size
        self.n_shards = (count + shard_size - 1) // shard_size

    def shard_path(self, i: int) -> Path:
        return self.dir / f"shard_{i:05d}.safetensors"

    def complete(self) -> bool:
        return (self.dir / "manifest.json").exists()

    def missing(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.shard_path(i).exists()]

    def write_shard(self, i: int, labels: torch.Tensor, idx: torch.Tensor, vocab: int) -> None:
        dt = torch.int16 if vocab <= 32767 else torch.int32
        t = {"labels": labels.long().contiguous(), "idx": idx.to(dt).contiguous()}
        atomic_write(self.shard_path(i), lambda tmp: save_file(t, tmp))

    def finish(self) -> None:
        man = {"count": self.count, "shards": self.n_shards, "fields": self.fields, "format_version": FORMAT_VERSION}
        atomic_write(self.dir / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(man, indent=1)))

    def load(self) -> TokenSet:
        if not self.complete():
            raise VarcompressError(f"{self.dir}: token cache is incomplete")
        parts = [read_state_dict(self.shard_path(i)) for i in range(self.n_shards)]
        labels = torch.cat([p["labels"] for p in parts]).long()
        idx = torch.cat([p["idx"] for p in parts]).long()
        if len(labels) != self.count:
            raise VarcompressError(f"{self.dir}: holds {len(labels)} samples, expected {self.count}")
        return TokenSet(labels, idx)


# ---- teacher-drawn token maps --------------------------------------------------------------------------
def teacher_cache(root, teacher_sha: str, sampling: dict, count: int, seed: int, shard_size: int,
                  purpose: str = "train") -> ShardCache:
    """The cache of `count` maps drawn from the (seed, purpose) stream (`streams.derive_seed`)."""
    derive_seed(seed, purpose)  # a bad seed or purpose fails here, before anything is drawn
    fields = {"teacher_sha256": teacher_sha, "sampling": sampling, "count": count, "seed": seed,
              "shard_size": shard_size, "labels": "balanced", "purpose": purpose}
    return ShardCache(Path(root), "teacher", fields, count, shard_size)


def draw_teacher_shards(cache: ShardCache, teacher, sampling: dict, progress: bool = False) -> None:
    """Draw every missing shard with the teacher (class-balanced labels, fixed seeds)."""
    remove_stale_temps(cache.dir)
    labels = balanced_labels(cache.count, teacher.num_classes)
    seed, purpose = cache.fields["seed"], cache.fields.get("purpose", "train")
    for i in tqdm(cache.missing(), desc="teacher token maps", disable=not progress):
        a, b = i * cache.shard_size, min(cache.count, (i + 1) * cache.shard_size)
        maps = draw_token_maps(teacher, labels[a:b], seed=derive_seed(seed, purpose, a), **sampling)
        cache.write_shard(i, maps.labels, maps.idx, teacher.V)
    cache.finish()


# ---- image folders -------------------------------------------------------------------------------------
def list_images(folder: str | Path) -> tuple[list[Path], list[int], list[str]]:
    root = Path(folder)
    if not root.is_dir():
        raise VarcompressError(f"data.path: {root} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise VarcompressError(f"data.path: {root} has no class sub-folders (expected <path>/<class>/<image>)")
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.suffix.lower() in IMAGE_EXT and f.is_file():
                files.append(f)
                labels.append(c)
    if not files:
        raise VarcompressError(f"data.path: no images ({', '.join(IMAGE_EXT)}) under {root}")
    return files, labels, classes


def image_cache(root, folder, vae_sha: str, resolution: int, count: int | None, seed: int,
                shard_size: int) -> tuple[ShardCache, list[Path], list[int]]:
    files, labels, _ = list_images(folder)
    if count is not None and count < len(files):
        keep = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    listing = hashlib.sha256()
    for f in files:
        st = f.stat()
        listing.update(f"{f.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    fields = {"vae_sha256": vae_sha, "resolution": resolution, "files": listing.hexdigest(), "count": len(files),
              "seed": seed, "shard_size": shard_size}
    return ShardCache(Path(root), "images", fields, len(files), shard_size), files, labels


def load_image(path: Path, res: int) -> torch.Tensor:
    """(3, res, res) in [0, 1]: shorter side resized to res (bicubic), centre crop."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = res / min(w, h)
            im = im.resize((max(res, round(w * s)), max(res, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - res) // 2, (h - res) // 2
            im = im.crop((left, top, left + res, top + res))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except OSError as e:
        raise VarcompressError(f"{path}: cannot read image ({e})") from None
    return data.view(res, res, 3).permute(2, 0, 1).float().div(255)


@torch.no_grad()
def encode_image_shards(cache: ShardCache, files: list[Path], labels: list[int], vae, resolution: int,
                        batch: int = 32, progress: bool = False) -> None:
    dev = next(vae.parameters()).device
    remove_stale_temps(cache.dir)
    for i in tqdm(cache.missing(), desc="encoding images", disable=not progress):
        a, b = i * cache.shard_size, min(cache.count, (i + 1) * cache.shard_size)
        idx = []
        for j in range(a, b, batch):
            img = torch.stack([load_image(f, resolution) for f in files[j:min(b, j + batch)]]).to(dev)
            idx.append(torch.cat(vae.img_to_idxBl(img.mul(2).sub(1)), dim=1).cpu())
        cache.write_shard(i, torch.tensor(labels[a:b]), torch.cat(idx), vae.vocab_size)
    cache.finish()


# ---- batches ---------------------------------------------------------------------------------------------
def batch_indices(seed: int, step: int, batch: int, n: int) -> torch.Tensor:
    """The global batch of `step`: consecutive slices of per-epoch permutations (no replacement)."""
    out, pos = [], step * batch
    while sum(len(o) for o in out) < batch:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=step_generator(seed, epoch, stream=7))
        take = min(batch - sum(len(o) for o in out), n - off)
        out.append(perm[off:off + take])
        pos += take
    return torch.cat(out)


def global_batch(data: TokenSet, seed: int, step: int, batch: int, uncond_prob: float,
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, idx) of the global batch; labels replaced by the unconditional class with uncond_prob."""
    sel = batch_indices(seed, step, batch, len(data))
    labels = data.labels[sel].clone()
    drop = torch.rand(batch, generator=step_generator(seed, step, stream=8)) < uncond_prob
    labels[drop] = num_classes
    return labels, data.idx[sel]


def to_var_input(vae, begin_ends, idx: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids -> teacher-forcing input (B, L - first_l, Cvae)."""
    return vae.idxBl_to_var_input([idx[:, a:b] for a, b in begin_ends])
