"""Teacher-relative metrics: zero for the teacher itself, closed forms otherwise."""
from __future__ import annotations

import math

import torch

from varcompress.generate.tokens import balanced_labels, draw_token_maps
from varcompress.metrics.teacher_relative import psnr, same_seed_agreement, teacher_forced_agreement

from .helpers import tiny_var
from .test_generation import tiny_vae


def _pair():
    vae = tiny_vae()
    return tiny_var(seed=0).attach_vae(vae), tiny_var(seed=1).attach_vae(vae)


def test_teacher_against_itself_is_perfect():
    teacher, _ = _pair()
    maps = draw_token_maps(teacher, balanced_labels(6, teacher.num_classes), seed=0, top_k=8)
    assert maps.idx.shape == (6, teacher.L) and maps.x.shape == (6, teacher.L - 1, teacher.Cvae)
    r = teacher_forced_agreement(teacher, teacher, maps)
    assert abs(r["kl"]) < 1e-6 and r["top1_agreement"] == 1.0
    s = same_seed_agreement(teacher, teacher, balanced_labels(4, 10), seed=3, top_k=8)
    assert s["token_agreement"] == 1.0 and s["identical_images"] == 4


def test_kl_matches_a_direct_computation():
    teacher, student = _pair()
    maps = draw_token_maps(teacher, torch.tensor([1, 2, 3]), seed=0, top_k=8)
    r = teacher_forced_agreement(student, teacher, maps, batch=2)  # batching must not matter
    with torch.no_grad():
        p = teacher(maps.labels, maps.x).softmax(-1)
        q = student(maps.labels, maps.x).softmax(-1)
    kl = (p * (p.log() - q.log())).sum(-1).mean().item()
    top1 = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    assert math.isclose(r["kl"], kl, rel_tol=1e-4) and r["kl"] > 0
    assert math.isclose(r["top1_agreement"], top1, rel_tol=1e-6)
    bg, ed = teacher.begin_ends[-1]
    kl_last = (p[:, bg:ed] * (p[:, bg:ed].log() - q[:, bg:ed].log())).sum(-1).mean().item()
    assert math.isclose(r["kl_per_scale"][-1], kl_last, rel_tol=1e-4)


def test_psnr_closed_form():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    torch.testing.assert_close(psnr(a, b), torch.full((2,), 20.0))  # mse 0.01 -> 20 dB
    assert torch.isinf(psnr(a, a)).all()


def test_different_models_disagree_on_some_tokens():
    teacher, student = _pair()
    s = same_seed_agreement(student, teacher, balanced_labels(4, 10), seed=0, top_k=8)
    assert s["token_agreement"] < 1.0 and math.isfinite(s["psnr_db"])
