"""Train a testbed teacher on CPU: first the multi-scale VQVAE, then the VAR on its tokens.

Both loops are resumable (atomic checkpoints every `ckpt_every` steps; batches depend
only on (seed, step)) and write official-format checkpoints at the end.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import first_line, read_state_dict, save_state_dict
from ..durable import atomic_write
from ..errors import VarcompressError
from ..models.init import init_var_weights
from ..training.resume import checkpoint_step, load_latest, save_training_state, step_generator
from ..training.schedule import set_lr, warmup_cosine
from ..vae_io import build_vae, load_vae
from ..var_io import build_var
from .datasets import get_dataset
from .teachers import TeacherSpec, teacher_card, teacher_paths, teacher_spec

POOL = {"shapes": 20000, "scenes": 20000, "digits": None}  # training images held in memory (None: the whole split)


def _augment(img: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random +-1 pixel shifts: cheap, keeps classes intact, stretches the small digits set."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    return torch.roll(img, shifts=(dy, dx), dims=(-2, -1))


def train_tokenizer(name: str, spec: TeacherSpec, run_dir: Path, seed: int = 0, lr: float = 2e-3,
                    ckpt_every: int = 200, progress: bool = True):
    """Train the VQVAE: MSE reconstruction + VQ loss, dead codes restarted from encoder outputs."""
    images, _ = get_dataset(name, "train", n=POOL[name], seed=seed)
    torch.set_flush_denormal(True)  # Adam's second moments underflow to denormals: 10x slower steps on x86
    torch.manual_seed(seed)
    vae = build_vae(spec.vae).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    start, state = _resume(run_dir, vae, opt)
    vae.quantize.record_hit = state.get("record_hit", 0)
    clock = _Clock(state)
    bar = tqdm(range(start, spec.vae_steps), desc=f"{name} vqvae", disable=not progress, initial=start,
               total=spec.vae_steps)
    for step in bar:
        gen = step_generator(seed, step)
        idx = torch.randint(0, len(images), (spec.vae_batch,), generator=gen)
        img = _augment(images[idx], gen).mul(2).sub(1)
        set_lr(opt, lr * warmup_cosine(step, spec.vae_steps, warmup=50))
        recon, vq_loss, usage = vae(img)
        loss = F.mse_loss(recon, img) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 and step + 1 < spec.vae_steps * 0.8:
            _restart_dead_codes(vae, img, gen)
        bar.set_postfix(loss=f"{loss.item():.4f}", usage=f"{usage:.0f}%")
        if (step + 1) % ckpt_every == 0 or step + 1 == spec.vae_steps:
            save_training_state(run_dir, step + 1, {"model": vae.state_dict(), "opt": opt.state_dict(),
                                                    "seconds": clock.total(),
                                                    "record_hit": vae.quantize.record_hit})
    return vae.eval()


@torch.no_grad()
def _restart_dead_codes(vae, img: torch.Tensor, gen: torch.Generator, threshold: float = 1e-3) -> None:
    """Codes the quantizer's hit EMA says are (nearly) unused get a fresh encoder vector."""
    dead = (vae.quantize.ema_vocab_hit_SV.sum(0) < threshold).nonzero().flatten()
    if dead.numel() == 0:
        return
    f = vae.img_to_f(img).permute(0, 2, 3, 1).reshape(-1, vae.Cvae)
    pick = torch.randint(0, f.shape[0], (dead.numel(),), generator=gen)
    scale = torch.rand(dead.numel(), 1, generator=gen) * 0.5 + 0.1  # residuals are smaller than f
    vae.quantize.embedding.weight[dead] = f[pick] * scale


def encode_dataset(vae, images: torch.Tensor, batch: int = 256):
    """Teacher-forcing inputs and targets for every image: (x_BLCv_wo_first_l, idx_BL)."""
    xs, ts = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            idx = vae.img_to_idxBl(images[i:i + batch].mul(2).sub(1))
            xs.append(vae.idxBl_to_var_input(idx))
            ts.append(torch.cat(idx, dim=1))
    return torch.cat(xs), torch.cat(ts)


def train_var(name: str, spec: TeacherSpec, vae, run_dir: Path, seed: int = 0, lr: float = 2e-3,
              cond_drop: float = 0.1, ckpt_every: int = 200, progress: bool = True, init: Path | None = None):
    """Train the VAR by teacher forcing on the VQVAE's tokens (class dropout for CFG).

    `init`: a trained VAR checkpoint of this spec to continue from (fresh optimizer, its own
    warmup-cosine schedule of `spec.var_steps`): a longer schedule without retraining."""
    images, labels = get_dataset(name, "train", n=POOL[name], seed=seed)
    x_all, t_all = encode_dataset(vae, images)
    torch.set_flush_denormal(True)  # as in train_tokenizer
    torch.manual_seed(seed)
    var = build_var(spec.var)
    init_var_weights(var)
    if init is not None:
        try:
            var.load_state_dict(read_state_dict(init, mmap=False))
        except RuntimeError as e:
            raise VarcompressError(f"{init}: not a VAR of the {name} teacher's architecture ({first_line(e)})")
    var.train()
    decay = [p for n, p in var.named_parameters() if p.ndim >= 2 and "pos_" not in n and "emb" not in n]
    other = [p for n, p in var.named_parameters() if not (p.ndim >= 2 and "pos_" not in n and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    start, state = _resume(run_dir, var, opt)
    clock = _Clock(state)
    bar = tqdm(range(start, spec.var_steps), desc=f"{name} var", disable=not progress, initial=start,
               total=spec.var_steps)
    for step in bar:
        gen = step_generator(seed, step, stream=1)
        idx = torch.randint(0, len(x_all), (spec.var_batch,), generator=gen)
        y = labels[idx].clone()
        y[torch.rand(spec.var_batch, generator=gen) < cond_drop] = var.num_classes
        set_lr(opt, lr * warmup_cosine(step, spec.var_steps, warmup=100))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.var_precision == "bf16"):
            logits = var(y, x_all[idx])
        loss = F.cross_entropy(logits.float().reshape(-1, var.V), t_all[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % ckpt_every == 0 or step + 1 == spec.var_steps:
            save_training_state(run_dir, step + 1, {"model": var.state_dict(), "opt": opt.state_dict(),
                                                    "seconds": clock.total()})
    return var.eval()


def _resume(run_dir: Path, model, opt) -> tuple[int, dict]:
    """Load the newest checkpoint of `run_dir` that reads and verifies (a torn newest one falls
    back to the previous, with one warning); return the step to continue from and the state."""
    found = load_latest(run_dir, ("model", "opt"), "model")
    if found is None:
        return 0, {}
    path, state = found
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return checkpoint_step(path), state


class _Clock:
    """Training seconds summed over every process of a resumed run (saved in each checkpoint)."""

    def __init__(self, state: dict):
        self.before, self.start = float(state.get("seconds", 0.0)), time.time()

    def total(self) -> float:
        return self.before + time.time() - self.start


def run_seconds(run_dir: Path) -> float:
    """Training seconds of a finished run: its last checkpoint (always written at the last step)."""
    found = load_latest(run_dir, ("model", "opt"), "model")
    return round(float(found[1].get("seconds", 0.0))) if found else 0


def train_teacher(name: str, out_dir: Path | None = None, seed: int = 0, progress: bool = True,
                  spec: TeacherSpec | None = None, work_dir: Path | None = None,
                  tokenizer: Path | None = None, var_init: Path | None = None,
                  var_lr: float = 2e-3) -> dict[str, Path]:
    """Train tokenizer and VAR for data set `name`; write `{name}_vae.pth`, `{name}_var.pth` and a card.

    `tokenizer`: an already trained VQVAE of this spec (e.g. the shipped one) to train the VAR on,
    instead of training one. `var_init`: a trained VAR to continue from (see `train_var`); the card
    keeps the card found next to it as `continued_from`, so the whole schedule stays on record."""
    spec = spec or teacher_spec(name)
    paths = teacher_paths(name, out_dir)
    work = Path(work_dir) if work_dir else paths["var"].parent / f".train_{name}"
    if tokenizer is not None:
        vae = load_vae(tokenizer, patch_nums=spec.vae.patch_nums)
        if vae.cfg.to_dict() != spec.vae.to_dict():
            raise VarcompressError(f"{tokenizer}: not the {name} tokenizer's architecture ({spec.vae.to_dict()})")
        vae_seconds = None
    else:
        vae = train_tokenizer(name, spec, work / "vae", seed=seed, progress=progress)
        vae_seconds = run_seconds(work / "vae")
    if Path(tokenizer or "").resolve() != paths["vae"].resolve():
        save_state_dict(vae.state_dict(), paths["vae"])
    previous = None
    if var_init is not None:
        previous = teacher_card(name, Path(var_init).parent) or {"checkpoint": str(var_init)}
    var = train_var(name, spec, vae.eval(), work / "var", seed=seed, lr=var_lr, progress=progress, init=var_init)
    save_state_dict(var.state_dict(), paths["var"])
    card = {"dataset": name, "seed": seed, "vae": spec.vae.to_dict(), "var": spec.var.to_dict(),
            "vae_steps": spec.vae_steps, "var_steps": spec.var_steps,
            "vae_batch": spec.vae_batch, "var_batch": spec.var_batch, "var_precision": spec.var_precision,
            "sampling": spec.sampling, "train_seconds": {"vae": vae_seconds, "var": run_seconds(work / "var")},
            "torch_threads": torch.get_num_threads()}
    if tokenizer is not None:
        card["tokenizer_from"] = str(tokenizer)
    if previous is not None:
        card["var_lr"] = var_lr
        card["continued_from"] = previous
    atomic_write(paths["card"], lambda tmp: Path(tmp).write_text(json.dumps(card, indent=1)))
    return paths
