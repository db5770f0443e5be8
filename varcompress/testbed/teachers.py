"""The shipped testbed teachers: one small VAR + VQVAE per built-in data set.

They are official-format checkpoints (`{name}_var.pth`, `{name}_vae.pth`) with a JSON
card that records how they were trained and the sampling settings they are judged with.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VarcompressError
from ..models.var import VARConfig
from ..models.vqvae import VQVAEConfig
from ..vae_io import load_vae
from ..var_io import load_var
from .datasets import dataset_info

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass
class TeacherSpec:
    """Architecture and training budget of one testbed teacher."""
    vae: VQVAEConfig
    var: VARConfig
    vae_steps: int = 600
    var_steps: int = 1200
    vae_batch: int = 32
    var_batch: int = 48
    var_precision: str = "fp32"   # "bf16": the VAR's forward under CPU bf16 autocast (fp32 weights and optimizer)
    sampling: dict = field(default_factory=lambda: dict(cfg=1.5, top_k=0, top_p=0.0))


def teacher_spec(name: str) -> TeacherSpec:
    info = dataset_info(name)
    patch_nums = tuple(info["patch_nums"])
    if name == "scenes":
        return _scenes_spec(info)
    # GroupNorm(32) with one channel per group (ch=32) is per-channel instance norm: it erases
    # flat colour, so the colourful shapes set needs ch=64 (2 channels per group) to keep it.
    vae = VQVAEConfig(vocab_size=512, z_channels=32, ch=64 if name == "shapes" else 32, ch_mult=(1, 2, 2),
                      num_res_blocks=1, patch_nums=patch_nums)
    var = VARConfig(depth=4, embed_dim=128, num_heads=2, mlp_ratio=4.0, vocab_size=512, Cvae=32,
                    num_classes=info["num_classes"], patch_nums=patch_nums, attn_l2_norm=True)
    if name == "digits":  # 1437 small images: fewer steps suffice
        return TeacherSpec(vae=vae, var=var, vae_steps=400)
    return TeacherSpec(vae=vae, var=var, var_steps=2400)  # 1200 steps gave 94.0% accuracy, 2400 give 98.6%


def _scenes_spec(info: dict) -> TeacherSpec:
    """The official token geometry (10 scales, 680 tokens) at a width that trains on 2 CPU cores.

    Tokenizer: ch_mult (1,2,4) ends the encoder at 128 channels (4 per GroupNorm group), so
    the latent can carry colour; VAR: 8 blocks of width 128 (docs/TESTBED.md, "scenes").
    """
    patch_nums = tuple(info["patch_nums"])
    vae = VQVAEConfig(vocab_size=512, z_channels=32, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1,
                      patch_nums=patch_nums)
    var = VARConfig(depth=8, embed_dim=128, num_heads=4, mlp_ratio=4.0, vocab_size=512, Cvae=32,
                    num_classes=info["num_classes"], patch_nums=patch_nums, attn_l2_norm=True)
    # cfg 3 / top-k 20: the best accuracy of an 11-setting sampling sweep on the v1 teacher (RESULTS.md 2c)
    return TeacherSpec(vae=vae, var=var, vae_steps=1200, var_steps=3000, vae_batch=16, var_batch=16,
                       sampling=dict(cfg=3.0, top_k=20, top_p=0.0))


def teacher_paths(name: str, root: Path | None = None) -> dict[str, Path]:
    root = Path(root) if root is not None else ASSETS
    return {"var": root / f"{name}_var.pth", "vae": root / f"{name}_vae.pth",
            "card": root / f"{name}_teacher.json"}


def teacher_card(name: str, root: Path | None = None) -> dict:
    path = teacher_paths(name, root)["card"]
    return json.loads(path.read_text()) if path.exists() else {}


def var_stages(card: dict) -> list[tuple[int, int | None]]:
    """(steps, training seconds) of each stage of a VAR's schedule, oldest first: a continued
    run's card keeps the card it continued from (`testbed train --var-init`)."""
    stages = []
    while card and "var_steps" in card:
        stages.insert(0, (card["var_steps"], card.get("train_seconds", {}).get("var")))
        card = card.get("continued_from")
    return stages


def load_teacher(name: str, root: Path | None = None):
    """(var, vae) of the shipped teacher for data set `name` ("shapes" or "digits"), eval mode."""
    dataset_info(name)  # validates the name
    paths = teacher_paths(name, root)
    if not paths["var"].exists() or not paths["vae"].exists():
        raise VarcompressError(f"no trained teacher for {name!r} at {paths['var'].parent} "
                               f"(train one: varcompress testbed train {name})")
    vae = load_vae(paths["vae"], patch_nums=tuple(dataset_info(name)["patch_nums"]))
    return load_var(paths["var"], vae=vae), vae
