"""Per-purpose random streams: evaluation never draws what training or calibration drew.

Checked on the seeds themselves (no images are generated): every draw's batch seeds are
computed exactly as `draw_token_maps` / `sample_classes` use them, at the official
recipes' sizes (count 16000-20000, shard 1000, 1000 classes).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from varcompress.compare import CompareOptions
from varcompress.distill.data import teacher_cache
from varcompress.errors import VarcompressError
from varcompress.prune import PruneConfig
from varcompress.streams import INDEX_BITS, PURPOSES, SEED_BITS, batch_seeds, derive_seed, purpose_of

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("official_d*.yaml"))
DRAW_BATCH = 32       # draw_token_maps / same_seed_agreement
CALIB_BATCH = 16      # convert's calibration_data


def training_seeds(seed: int, count: int, shard: int) -> set[int]:
    """Batch seeds of every training shard (distill.data.draw_teacher_shards)."""
    out = set()
    for a in range(0, count, shard):
        out.update(batch_seeds(derive_seed(seed, "train", a), min(shard, count - a), DRAW_BATCH))
    return out


def evaluation_seeds(seeds, maps: int, same: int, n_images: int, sample_batch: int = 50) -> dict[str, set[int]]:
    out = {"eval_maps": set(), "same_seed": set(), "sampling": set()}
    for s in seeds:
        out["eval_maps"].update(batch_seeds(derive_seed(s, "eval_maps"), maps, DRAW_BATCH))
        out["same_seed"].update(batch_seeds(derive_seed(s, "same_seed"), same, DRAW_BATCH))
        out["sampling"].update(batch_seeds(derive_seed(s, "sampling"), n_images, sample_batch))
    return out


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
@pytest.mark.parametrize("count", [16000, 20000])
def test_official_sizes_disjoint(recipe, count):
    r = yaml.safe_load(recipe.read_text())
    seed, shard, ev = r["run"]["seed"], r["data"]["shard_size"], r["eval"]
    assert shard == 1000
    train = training_seeds(r["data"].get("seed", seed), count, shard)
    assert len(train) == sum(-(-min(shard, count - a) // DRAW_BATCH) for a in range(0, count, shard))
    calib = set(batch_seeds(derive_seed(seed, "calibration"), r["student"]["convert"]["calib_samples"], CALIB_BATCH))
    calib |= set(batch_seeds(derive_seed(PruneConfig().seed, "calibration"), PruneConfig().calib_samples, DRAW_BATCH))
    held = set(batch_seeds(derive_seed(seed, "held_out"), ev["held_out"], DRAW_BATCH))
    opts = CompareOptions()
    streams = {"train": train, "calibration": calib, "held_out": held,
               **evaluation_seeds(opts.seeds, max(opts.teacher_maps, ev["teacher_maps"]),
                                  max(opts.same_seed, ev["same_seed"]), opts.n_per_class * 1000)}
    names = list(streams)
    for i, a in enumerate(names):
        assert streams[a], a
        assert {purpose_of(g) for g in streams[a]} == {a if a in PURPOSES else None}
        for b in names[i + 1:]:
            assert not streams[a] & streams[b], f"{a} and {b} share random streams"


def test_the_old_offsets_collided():
    """What the derivation fixes: shard 10 (seed + 10_000) was the evaluation maps (seed + 10_000)."""
    old_shard_10 = set(batch_seeds(0 + 10 * 1000, 1000, DRAW_BATCH))
    old_eval = set(batch_seeds(0 + 10_000, 64, DRAW_BATCH))
    assert old_eval <= old_shard_10
    assert not set(batch_seeds(derive_seed(0, "train", 10_000), 1000, DRAW_BATCH)) & \
        set(batch_seeds(derive_seed(0, "eval_maps"), 64, DRAW_BATCH))


def test_structure_and_range():
    top = 2 ** (SEED_BITS + INDEX_BITS)
    for p in PURPOSES:
        for s in (0, 1, 2 ** SEED_BITS - 1):
            g = derive_seed(s, p, 2 ** INDEX_BITS - 1)
            assert top <= g < 2 ** 32 and purpose_of(g) == p  # a CPU generator keeps only 32 bits
    assert derive_seed(3, "train", 5) == derive_seed(3, "train") + 5  # batch offsets stay in the stream
    assert derive_seed(0, "sampling") != derive_seed(1, "sampling")
    assert purpose_of(12345) is None  # raw user seeds (generate --seed) are below every derived one
    for bad in (lambda: derive_seed(0, "nope"), lambda: derive_seed(-1, "train"),
                lambda: derive_seed(2 ** SEED_BITS, "train"), lambda: derive_seed(0, "train", 2 ** INDEX_BITS)):
        with pytest.raises(VarcompressError):
            bad()


def test_the_draws_differ_not_just_the_seeds():
    """What a sampler actually draws (CPU generator) differs between purposes and base seeds."""
    draws = set()
    for p in PURPOSES:
        for s in (0, 1, 2):
            g = torch.Generator().manual_seed(derive_seed(s, p))
            draws.add(tuple(torch.rand(4, generator=g).tolist()))
    assert len(draws) == len(PURPOSES) * 3


def test_cache_identity_includes_purpose(tmp_path):
    a = teacher_cache(tmp_path, "sha", {"cfg": 1.5}, 64, 0, 32)
    b = teacher_cache(tmp_path, "sha", {"cfg": 1.5}, 64, 0, 32, purpose="held_out")
    assert a.dir != b.dir and a.fields["purpose"] == "train"


def test_derived_seeds_draw_different_numbers():
    """The property that matters: different purposes and base seeds give different draws on the CPU
    generator, which keeps only the low 32 bits of a seed (seeds 1 and 1 + 2**32 draw the same)."""
    def first_draws(g_seed: int) -> tuple[float, ...]:
        return tuple(torch.rand(4, generator=torch.Generator().manual_seed(g_seed)).tolist())

    assert first_draws(1) == first_draws(1 + 2 ** 32)   # why the derivation must stay below 2**32
    draws = {first_draws(derive_seed(s, p, i)) for p in PURPOSES for s in (0, 1, 2) for i in (0, 32)}
    assert len(draws) == len(PURPOSES) * 3 * 2
