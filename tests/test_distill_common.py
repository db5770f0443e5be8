"""Shared pieces of the distill tests: a tiny peaky teacher on disk and a tiny recipe."""
from __future__ import annotations

import copy

import pytest
import torch

from varcompress.checkpoint import save_state_dict

from .helpers import tiny_var
from .test_generation import tiny_vae


def write_tiny_teacher(folder) -> dict:
    var = tiny_var(0)
    with torch.no_grad():
        var.head.weight.mul_(8.0)  # peaky next-token distributions: KL differences are visible
    save_state_dict(var.state_dict(), folder / "var.pth")
    save_state_dict(tiny_vae(0).state_dict(), folder / "vae.pth")
    return {"checkpoint": str(folder / "var.pth"), "vae": str(folder / "vae.pth")}


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> dict:
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher"))


def tiny_recipe(teacher: dict, out, cache, steps=(4, 4), **run) -> dict:
    r = {
        "teacher": dict(teacher),
        "student": {"convert": {"experts": 4, "top_k": 2, "keep_ratio": 0.5, "sparse_scales": 2, "expert_scales": None,
                                "selector": "learned", "reconstruction": "prev_scale",
                                "calib_samples": 16, "calib_tokens": 512}},
        "data": {"count": 48, "cache_dir": str(cache), "cfg": 1.5, "top_k": 0, "top_p": 0.0, "shard_size": 32},
        "stages": [
            {"name": "align", "steps": steps[0], "lr": 3e-3, "warmup": 1, "train": ["routers", "selectors"],
             "losses": {"kl": 1.0, "router": 0.1, "selector": 0.1}},
            {"name": "joint", "steps": steps[1], "lr": 1e-3, "warmup": 1,
             "train": ["experts", "routers", "selectors"], "losses": {"kl": 1.0, "feature": 0.1}},
        ],
        "run": {"batch": 8, "ckpt_every": 2, "out_dir": str(out), "threads": 1, "progress": False, "device": "cpu"},
        "eval": {"n_per_class": 2, "teacher_maps": 16, "same_seed": 4, "held_out": 16},
    }
    r["run"].update(run)
    return copy.deepcopy(r)
