"""Small CNN trained on each testbed set: stands in for Inception in offline FID etc.

Its 128-d penultimate features feed FID and precision/recall; its logits give the
class-conditional accuracy of generated images. The penultimate layer sees the
flattened 4x4 map (not a global pool), so features keep where things are, and a
generator that misplaces content is penalised. 32x32 sets use three conv stages, the
64x64 `scenes` set four; the features are 128-d either way. Trained weights ship with the package
(`varcompress/testbed/assets/classifier_{name}.safetensors` + `.json`); regenerate with
`python -m varcompress.metrics.classifier --train NAME`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from ..checkpoint import check_finite, read_state_dict
from ..durable import atomic_write
from ..errors import VarcompressError
from ..testbed.datasets import get_dataset, get_spec

ASSETS = Path(__file__).resolve().parents[1] / "testbed" / "assets"
FEATURE_DIM = 128
# Per set: (epochs, peak learning rate, max shift in px). Tuned to pass the accuracy
# targets (shapes >= 98%, digits >= 97%) in well under two minutes on two CPU cores.
TRAIN_CONFIG = {"shapes": (3, 3e-3, 2), "digits": (15, 3e-3, 2), "scenes": (4, 3e-3, 2)}


class TestbedClassifier(nn.Module):
    """n x (conv3x3-BN-ReLU-maxpool) down to 4x4 -> flatten 128x4x4 -> 128-d feature -> linear head."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        stages = (image_size // 4).bit_length() - 1
        if image_size < 32 or 4 << stages != image_size:
            raise VarcompressError(f"classifier: image size must be a power of two >= 32, got {image_size}")
        widths = (32, 64, 128) + (128,) * (stages - 3)
        layers, c_in = [], 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feat = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> (B,128) penultimate features."""
        return self.feat(self.body((x - 0.5) / 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def embed(model: TestbedClassifier, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N,128) and logits (N,C) in eval mode, in batches to bound memory."""
    model.eval()
    feats, logits = [], []
    for i in range(0, images.shape[0], batch):
        f = model.features(images[i:i + batch].float())
        feats.append(f)
        logits.append(model.head(f))
    return torch.cat(feats), torch.cat(logits)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `max_shift` px per image (edge-replicated padding)."""
    if max_shift == 0:
        return x
    b, s = x.shape[0], x.shape[-1]
    pad = F.pad(x, [max_shift] * 4, mode="replicate")
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen)
    ar = torch.arange(s)
    rows = (off[:, 0, None] + ar)[:, None, :, None].expand(b, 3, s, s + 2 * max_shift)
    pad = pad.gather(2, rows)
    cols = (off[:, 1, None] + ar)[:, None, None, :].expand(b, 3, s, s)
    return pad.gather(3, cols)


def accuracy(model: TestbedClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((embed(model, images)[1].argmax(1) == labels).float().mean())


def train_classifier(name: str, seed: int = 0, verbose: bool = False) -> tuple[TestbedClassifier, dict]:
    """Train the classifier for set `name` deterministically; return (model, info dict)."""
    spec = get_spec(name)
    epochs, lr, max_shift = TRAIN_CONFIG[name]
    x, y = get_dataset(name, "train")   # the canonical data (seed 0); `seed` only drives
    xt, yt = get_dataset(name, "test")  # initialisation, shuffling and augmentation
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TestbedClassifier(len(spec.class_names), spec.image_size)
    batch = 128
    steps = epochs * ((len(y) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(_shift(x[idx], max_shift, gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if verbose:
            print(f"{name} epoch {ep + 1}/{epochs}: loss {loss.item():.3f} "
                  f"test acc {accuracy(model, xt, yt):.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    info = {"dataset": name, "seed": seed, "test_accuracy": round(accuracy(model, xt, yt), 4),
            "n_train": len(y), "n_test": len(yt), "epochs": epochs,
            "train_seconds": round(time.time() - t0, 1), "torch": torch.__version__}
    return model, info


def save_classifier(model: TestbedClassifier, info: dict, out_dir: Path = ASSETS) -> Path:
    """Write weights (safetensors) and the info JSON next to each other, atomically."""
    name = info["dataset"]
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = atomic_write(Path(out_dir) / f"classifier_{name}.safetensors", lambda tmp: save_file(sd, tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1) + "\n"))
    return path


def load_classifier(name: str, assets: Path = ASSETS) -> TestbedClassifier:
    """The shipped classifier for set `name`, in eval mode."""
    spec = get_spec(name)
    path = Path(assets) / f"classifier_{name}.safetensors"
    if not path.exists():
        raise VarcompressError(f"no classifier for {name!r} at {path}; "
                               f"run: python -m varcompress.metrics.classifier --train {name}")
    sd = read_state_dict(path)
    check_finite(sd, str(path))
    model = TestbedClassifier(len(spec.class_names), spec.image_size)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise VarcompressError(f"{path}: does not match the classifier architecture ({str(e).splitlines()[0]})") from None
    return model.eval()


def classifier_info(name: str, assets: Path = ASSETS) -> dict:
    """The JSON saved with the weights (test accuracy, seed, ...)."""
    get_spec(name)
    return json.loads((Path(assets) / f"classifier_{name}.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m varcompress.metrics.classifier", description=__doc__.split("\n")[0])
    p.add_argument("--train", metavar="NAME", required=True, help="dataset to (re)train the classifier for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: the package assets)")
    args = p.parse_args(argv)
    try:
        model, info = train_classifier(args.train, args.seed, verbose=True)
        path = save_classifier(model, info, args.out)
    except VarcompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({json.dumps(info)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
