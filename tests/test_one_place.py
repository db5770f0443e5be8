"""Mechanisms defined once and shared: the KL core, the sampling defaults, what a distill run is."""
from __future__ import annotations

import pytest
import torch

from varcompress.distill.losses import kl_loss
from varcompress.loading import is_distill_run, model_dir
from varcompress.metrics.kl import log_probs, token_kl
from varcompress.models.sampler import OFFICIAL_SAMPLING
from varcompress.models.var import VARConfig
from varcompress.resolve import default_sampling


def test_kl_core_and_its_reductions():
    s, t = torch.randn(2, 5, 11) * 3, torch.randn(2, 5, 11)
    lt, ls = t.log_softmax(-1), s.log_softmax(-1)
    per_token = token_kl(log_probs(t), log_probs(s))
    assert torch.equal(per_token, (lt.exp() * (lt - ls)).sum(-1))
    assert torch.equal(kl_loss(s, t), per_token.mean())
    assert torch.equal(log_probs(s, 2.0), (s / 2.0).log_softmax(-1))
    assert token_kl(lt, lt).abs().max() == 0


def test_sampling_defaults():
    assert default_sampling(None) == dict(OFFICIAL_SAMPLING) == {"cfg": 1.5, "top_k": 900, "top_p": 0.96}
    with pytest.raises(TypeError):
        OFFICIAL_SAMPLING["cfg"] = 2.0  # read-only: copy it to change it
    assert default_sampling(None, cfg=3.0, top_k=None) == {"cfg": 3.0, "top_k": 900, "top_p": 0.96}


def test_one_rule_for_a_distill_run(tmp_path):
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "recipe.resolved.yaml").write_text("{}\n")
    assert is_distill_run(run) and model_dir(run) == run  # unfinished: no student yet
    (run / "student").mkdir()
    (run / "student" / "recipe.resolved.yaml").write_text("{}\n")
    (run / "student" / "config.json").write_text("{}\n")
    assert model_dir(run) == run / "student" and not is_distill_run(run / "student")
    assert not is_distill_run(tmp_path)


def test_older_cards_with_the_unused_extra_field_still_load():
    d = VARConfig(depth=2).to_dict()
    assert "extra" not in d
    assert VARConfig.from_dict({**d, "extra": {}}) == VARConfig.from_dict(d)
