"""Parameter groups, stage freezing and the training relaxations (same values, gradients reach the gates)."""
from __future__ import annotations

import pytest
import torch

from varcompress.convert import ConvertConfig, convert
from varcompress.distill.losses import kl_loss
from varcompress.distill.recipe import parse_recipe
from varcompress.distill.relax import StudentHooks
from varcompress.distill.stages import GROUP_NAMES, apply_stage, param_groups

from .helpers import tiny_var


def tiny_student(**kw):
    var = tiny_var(0)
    labels, x = torch.arange(8) % 10, torch.randn(8, var.L - 1, var.Cvae)
    cfg = dict(experts=4, top_k=2, keep_ratio=0.5, sparse_scales=2, calib_tokens=512, expert_scales=None,
               selector="learned", reconstruction="prev_scale")
    cfg.update(kw)
    return var, convert(var, ConvertConfig(**cfg), calib=(labels, x)), labels, x


def stage(train, **losses):
    r = parse_recipe({"teacher": {"checkpoint": "x"},
                      "stages": [{"steps": 1, "lr": 1.0, "train": train, "losses": losses or {"kl": 1.0}}]})
    return r["stages"][0]


def test_groups_partition_every_parameter():
    _, student, _, _ = tiny_student()
    groups = param_groups(student)
    names = [n for g in GROUP_NAMES for n, _ in groups[g]]
    assert sorted(names) == sorted(n for n, _ in student.named_parameters())
    assert all(groups[g] for g in GROUP_NAMES)
    assert all(".router." in n for n, _ in groups["routers"])
    assert all(".selector." in n for n, _ in groups["selectors"])
    assert all("experts_" in n for n, _ in groups["experts"])
    assert all(".attn." in n for n, _ in groups["attention"])


def test_stage_freezes_all_but_its_groups():
    _, student, _, _ = tiny_student()
    hooks = StudentHooks(student)
    params = apply_stage(student, hooks, stage(["routers", "selectors"]), 0)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    groups = param_groups(student)
    assert trainable == {n for g in ("routers", "selectors") for n, _ in groups[g]}
    assert len(params) == len(trainable)
    apply_stage(student, hooks, stage(["all"]), 1)
    assert all(p.requires_grad for p in student.parameters())
    hooks.remove()


@pytest.mark.parametrize("router_mode", ["st", "gumbel"])
def test_relaxations_keep_the_hard_forward_and_reach_the_gates(router_mode):
    teacher, student, labels, x = tiny_student()
    with torch.no_grad():
        hard = student(labels, x)  # eval mode: the inference path
        t = teacher(labels, x)
    hooks = StudentHooks(student)
    st = stage(["routers", "selectors"])
    st["relax"]["router"] = router_mode
    apply_stage(student, hooks, st, 0)
    student.train()
    soft = student(labels, x)
    if router_mode == "st":  # same top-k and keep sets: same values
        assert (soft - hard).abs().max().item() < 1e-5
    kl_loss(soft, t).backward()
    first = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    for g in ("routers", "selectors"):
        grads = [p.grad for _, p in param_groups(student)[g]]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads), g
        assert sum(gr.abs().sum().item() for gr in grads) > 0, g
    if router_mode == "st":  # deterministic: the auxiliary dense pass reads only what it should
        student.zero_grad(set_to_none=True)
        kl_loss(student(labels, x), t).backward()
        assert all(torch.equal(first[n], p.grad) for n, p in student.named_parameters() if n in first)
    hooks.remove()
    student.eval()
    with torch.no_grad():
        assert torch.equal(student(labels, x), hard)  # hooks gone: inference untouched


def test_selector_relaxation_reconstructs_skipped_tokens_as_the_block_does(monkeypatch):
    """"cached": the relaxation's u_reconstructed is the cache scale's update map, as in the block."""
    from varcompress.activated.token_path import Reconstruction

    teacher, student, labels, x = tiny_student(reconstruction="cached", cache_scale=1)
    with torch.no_grad():
        hard = student(labels, x)
    hooks = StudentHooks(student)
    apply_stage(student, hooks, stage(["selectors"]), 0)
    seen, real = [], Reconstruction.base
    monkeypatch.setattr(Reconstruction, "base", lambda r, s, xs, c: seen.append((s, c.u_cache is not None))
                        or real(r, s, xs, c))
    student.train()
    soft = student(labels, x)
    assert (soft - hard).abs().max().item() < 1e-5
    assert seen and all(has for s, has in seen if s > 1)  # teacher forcing and relaxation both read it
    kl_loss(soft, teacher(labels, x)).backward()
    grads = [p.grad for _, p in param_groups(student)["selectors"]]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    hooks.remove()


def test_hard_path_when_gates_frozen():
    """Experts-only stage: no straight-through, no dense auxiliary pass (the inference computation)."""
    _, student, labels, x = tiny_student()
    hooks = StudentHooks(student)
    apply_stage(student, hooks, stage(["experts"]), 0)
    assert hooks.expert_dispatch == "loop"
    student.train()
    with torch.no_grad():
        a = student(labels, x)
    student.eval()
    with torch.no_grad():
        assert torch.equal(a, student(labels, x))
    hooks.remove()


def test_guided_kl_matches_the_sampler_combination():
    from varcompress.distill.losses import guided_kl_loss

    pns, V, B = (1, 2), 5, 3
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2 * B, 5, V, generator=g), torch.randn(2 * B, 5, V, generator=g)
    assert guided_kl_loss(t, t, 2.0, pns).abs().item() < 1e-6
    # scale 0 is unguided (t=0): only the cond rows matter there; scale 1 uses (1+2) cond - 2 uncond
    tg = torch.cat([t[:B, :1], 3 * t[:B, 1:] - 2 * t[B:, 1:]], 1).log_softmax(-1)
    sg = torch.cat([s[:B, :1], 3 * s[:B, 1:] - 2 * s[B:, 1:]], 1).log_softmax(-1)
    want = (tg.exp() * (tg - sg)).sum(-1).mean()
    assert torch.allclose(guided_kl_loss(s, t, 2.0, pns), want, atol=1e-6)


def test_kl_scale_weighting():
    from varcompress.distill.losses import scale_mean

    per_token = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])  # scales of 1 and 4 tokens
    assert scale_mean(per_token, (1, 2), "token").item() == pytest.approx(0.2)
    assert scale_mean(per_token, (1, 2), "scale").item() == pytest.approx(0.5)
