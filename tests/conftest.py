"""Shared test fixtures: fixed seeds, single-threaded torch, and the official fixture folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# One thread: the CI machine has 2 cores and oversubscribed BLAS is several times slower.
torch.set_num_threads(1)

# Property tests draw the same examples on every run (a CI failure reproduces); set
# VARCOMPRESS_FUZZ_EXAMPLES=N for a longer hunt with fresh random examples.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("hunt", derandomize=False)
settings.load_profile("hunt" if os.environ.get("VARCOMPRESS_FUZZ_EXAMPLES") else "reproducible")

SHARED = Path(os.environ.get("VARCOMPRESS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The folder of files made by the official VAR code; skip when this machine lacks it."""
    if not (OFFICIAL / "tiny_d2_var.pth").exists():
        pytest.skip(f"official fixtures not found at {OFFICIAL} (set VARCOMPRESS_SHARED)")
    return OFFICIAL


@pytest.fixture(scope="session")
def official_reference(official_dir):
    from safetensors.torch import load_file

    return load_file(str(official_dir / "tiny_d2_reference.safetensors"))
