"""Fine-tuning a baseline with a distill recipe's budget: only FFN weights move, the KL goes down."""
from __future__ import annotations

import pytest
import torch

from varcompress.distill.data import TokenSet
from varcompress.errors import VarcompressError
from varcompress.models.vqvae import VQVAE, VQVAEConfig
from varcompress.prune import PruneConfig, budget_from_recipe, finetune, prune

from .helpers import tiny_var

RECIPE = {"teacher": {"checkpoint": "digits"},
          "stages": [{"name": "align", "steps": 2, "lr": 1e-2, "train": ["routers"], "losses": {"kl": 1.0}},
                     {"name": "joint", "steps": 4, "lr": 3e-3, "warmup": 1, "train": ["experts", "routers"],
                      "losses": {"kl": 1.0, "feature": 0.1}}],
          "run": {"batch": 4, "seed": 3}, "data": {"count": 16, "uncond_prob": 0.25}}


def test_budget_from_recipe():
    b = budget_from_recipe(RECIPE)
    assert (b.steps, b.lr, b.warmup, b.batch, b.seed, b.uncond_prob) == (6, 3e-3, 1, 4, 3, 0.25)
    assert b.data["count"] == 16 and b.grad_clip == 1.0


def test_budget_from_bad_recipe_is_one_line():
    with pytest.raises(VarcompressError) as e:
        budget_from_recipe({**RECIPE, "run": {"batch": "big"}})
    assert "run.batch" in str(e.value) and "\n" not in str(e.value)


@torch.no_grad()
def kl_on(student, teacher, data):
    from varcompress.distill.data import to_var_input
    from varcompress.distill.losses import kl_loss

    x = to_var_input(teacher.vae, teacher.begin_ends, data.idx)
    return float(kl_loss(student(data.labels, x), teacher(data.labels, x)))


@pytest.mark.parametrize("method", ["magnitude", "tokens"])
def test_finetune_trains_only_ffn(method):
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=(1, 2, 3, 4))).eval()
    teacher = tiny_var().attach_vae(vae)
    g = torch.Generator().manual_seed(0)
    calib = (torch.randint(0, 10, (4,), generator=g), torch.randn(4, teacher.L - 1, 8, generator=g))
    cfg = PruneConfig(method=method, flops_target=0.6) if method == "magnitude" else \
        PruneConfig(method="tokens", keep_ratio=[1, 1, 0.5, 0.5])
    student = prune(teacher, cfg, calib=calib).model
    data = TokenSet(torch.randint(0, 10, (16,), generator=g), torch.randint(0, 32, (16, teacher.L), generator=g))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    kl0 = kl_on(student, teacher, data)
    budget = budget_from_recipe(RECIPE)
    budget.lr, budget.uncond_prob = 5e-4, 0.0  # small steps: the KL must go down on this random model
    out = finetune(student, teacher, data, budget)
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("ffn" in k and ("fc" in k or "experts_" in k)) for k in changed), changed
    assert out["steps"] == 6 and kl_on(student, teacher, data) < kl0
    assert not student.training and not any(p.requires_grad for p in student.parameters())


def test_matches_varcompress_distill_exactly(tmp_path):
    """A token-pruned model (teacher-shaped) can also go through `varcompress distill`: with a KL-only stage
    training experts, distill and this loop give the same weights (same data, batches, schedule, optimiser)."""
    from varcompress.compare.models import load_model, Entry, teacher_sha256
    from varcompress.distill import distill
    from varcompress.prune import save_pruned, teacher_data
    from varcompress.testbed.teachers import load_teacher, teacher_card

    teacher, _ = load_teacher("digits")
    res = prune(teacher, PruneConfig(method="tokens", keep_ratio=[1, 1, 1, 1, 0.6, 0.6, 0.6], calib_samples=4),
                sampling=teacher_card("digits")["sampling"])
    save_pruned(res.model, res.info, tmp_path / "tok")
    recipe = {"teacher": {"checkpoint": "digits"}, "student": {"from": str(tmp_path / "tok")},
              "data": {"count": 8, "shard_size": 8, "cache_dir": str(tmp_path / "cache"), "uncond_prob": 0.3},
              "stages": [{"steps": 3, "lr": 1e-3, "warmup": 1, "train": ["experts"], "losses": {"kl": 1.0}}],
              "run": {"batch": 4, "out_dir": str(tmp_path / "run"), "device": "cpu", "progress": False},
              "eval": {"testbed": False, "converted": False, "teacher": False, "teacher_maps": 1, "same_seed": 1}}
    theirs = distill(recipe).student.state_dict()
    mine = load_model(Entry("t", str(tmp_path / "tok")), dataset="digits").var
    budget = budget_from_recipe({k: v for k, v in recipe.items() if k != "student"})
    data = teacher_data(teacher, teacher_sha256("digits"), budget, teacher_card("digits")["sampling"])
    finetune(mine, teacher, data, budget)
    assert all(torch.equal(theirs[k], v) for k, v in mine.state_dict().items())
    key = "blocks.0.inner.ffn.experts_w1"
    assert not torch.equal(theirs[key], res.model.state_dict()[key])  # and training did move the weights


@pytest.mark.parametrize("method", ["wanda", "fastvar", "split"])
def test_recipe_groups_all_train_every_group_of_a_baseline(method):
    """Fair by construction: `train: [all]` in the recipe's weight stage trains every group of a baseline too
    (a scale split: its small model only; the teacher part stays the teacher)."""
    torch.manual_seed(0)
    pn = (1, 2, 3, 4, 6, 8)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=pn)).eval()
    teacher = tiny_var(patch_nums=pn).attach_vae(vae)
    g = torch.Generator().manual_seed(0)
    calib = (torch.randint(0, 10, (4,), generator=g), torch.randn(4, teacher.L - 1, 8, generator=g))
    student = prune(teacher, PruneConfig(method=method, flops_target=0.7), calib=calib).model
    data = TokenSet(torch.randint(0, 10, (16,), generator=g), torch.randint(0, 32, (16, teacher.L), generator=g))
    recipe = {**RECIPE, "stages": [RECIPE["stages"][0], {**RECIPE["stages"][1], "train": ["all"]}]}
    budget = budget_from_recipe(recipe)
    assert budget.train == ("all",)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    out = finetune(student, teacher, data, budget)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(before[k], v)}
    assert out["trained"] == ["all"] and out["seeds"] == {"run": 3, "data": budget.data["seed"]}
    assert {"attention", "experts", "modulation", "embeddings", "head"} <= set(out["groups"])
    assert any("attn" in k for k in changed) and any("head" in k for k in changed)
    if method == "split":
        assert changed and all(k.startswith("small.") for k in changed)
