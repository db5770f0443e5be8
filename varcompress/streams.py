"""Per-purpose random streams: every seed a sampler sees is derived from (seed, purpose, index) here.

Why: evaluation must never draw what training drew. With plain offsets (`seed + 10_000`)
the evaluation maps of the official recipes were shard 10 of the training data. Here a
derived seed is `purpose << 29 | seed << 20 | index`: different purposes (or base seeds)
occupy disjoint ranges by construction. It must fit in 32 bits: torch's CPU generator
(mt19937) keeps only the low 32 bits of `manual_seed`, so seeds that differ above bit 31
draw the same numbers (tests/test_streams.py checks the draws, not just the seeds). That
bounds base seeds to [0, 512) and a stream to 2**20 samples; raw user seeds below 2**29
(e.g. `generate --seed`) never equal a derived one. Batch j of a draw uses `derived + j * batch`
(`batch_seeds`), so an index is the position of the first sample of the batch.
"""
from __future__ import annotations

from .errors import VarcompressError

PURPOSES = {  # never renumber: a number is part of every cached draw's identity
    "train": 1,        # distillation / fine-tuning token maps (distill.data shards)
    "calibration": 2,  # convert's and prune's calibration maps
    "held_out": 3,     # distill's in-training monitor maps
    "eval_maps": 4,    # compare / eval: teacher-forced KL and top-1 maps
    "same_seed": 5,    # compare / eval: same-seed token agreement and PSNR
    "sampling": 6,     # compare / eval: images for the testbed metrics (one stream per sampling seed)
    "latency": 7,      # timing runs
}
SEED_BITS, INDEX_BITS = 9, 20   # + 3 purpose bits = the 32 bits a CPU generator uses


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The generator seed of sample `index` of `purpose` under the run's base `seed` (< 2**32)."""
    if purpose not in PURPOSES:
        raise VarcompressError(f"unknown random-stream purpose {purpose!r} ({', '.join(PURPOSES)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** SEED_BITS:
        raise VarcompressError(f"seed must be an integer in [0, {2 ** SEED_BITS}), got {seed!r}")
    if not 0 <= index < 2 ** INDEX_BITS:
        raise VarcompressError(f"random stream index {index} out of range [0, 2**{INDEX_BITS})")
    return (PURPOSES[purpose] << (SEED_BITS + INDEX_BITS)) | (seed << INDEX_BITS) | index


def batch_seeds(seed: int, n: int, batch: int) -> list[int]:
    """The g_seed of each batch when n samples are drawn `batch` at a time from base `seed`."""
    return [seed + i for i in range(0, n, batch)]


def purpose_of(g_seed: int) -> str | None:
    """The purpose a derived seed belongs to (None for a raw seed below 2**29)."""
    p = g_seed >> (SEED_BITS + INDEX_BITS)
    return next((k for k, v in PURPOSES.items() if v == p), None)
