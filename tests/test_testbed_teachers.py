"""The shipped testbed teachers load, generate their classes, and training resumes exactly."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from varcompress import VarcompressError
from varcompress.evaluate import EvalProtocol
from varcompress.evaluate import testbed_metrics as sample_and_score
from varcompress.testbed import dataset_info
from varcompress.testbed.teachers import load_teacher, teacher_card, teacher_paths, teacher_spec, var_stages
from varcompress.checkpoint import read_training_state
from varcompress.testbed.train import run_seconds, train_teacher, train_tokenizer

SHIPPED = [n for n in ("digits", "shapes", "scenes") if teacher_paths(n)["var"].exists()]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_teacher_generates_recognisable_classes(name):
    var, vae = load_teacher(name)
    info = dataset_info(name)
    assert var.vae is vae and var.num_classes == 10 and var.cfg.patch_nums == tuple(info["patch_nums"])
    assert var.cfg.embed_dim * var.cfg.mlp_ratio >= 8 * 32  # wide enough for >= 8 experts
    metrics, images = sample_and_score(var, name, EvalProtocol(n_per_class=4, sampling=teacher_card(name)["sampling"]))
    assert images.shape == (40, 3, info["image_size"], info["image_size"])
    assert metrics["accuracy"] >= 0.85  # label = class (the digit); measured ~0.99 at larger n


def test_unknown_or_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(VarcompressError, match="unknown"):
        load_teacher("cifar")
    with pytest.raises(VarcompressError, match="no trained teacher"):
        load_teacher("digits", root=tmp_path)


def test_tokenizer_training_resumes_to_the_same_weights(tmp_path):
    spec = teacher_spec("digits")
    spec = dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, vocab_size=16), vae_steps=4, vae_batch=2)
    full = train_tokenizer("digits", spec, tmp_path / "full", ckpt_every=2, progress=False)
    half = train_tokenizer("digits", dataclasses.replace(spec, vae_steps=2), tmp_path / "split", ckpt_every=2,
                           progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(half.state_dict().values(), full.state_dict().values()))
    resumed = train_tokenizer("digits", spec, tmp_path / "split", ckpt_every=2, progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_training_seconds_add_up_over_resumes_and_the_last_step_is_saved(tmp_path):
    spec = teacher_spec("digits")
    spec = dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, vocab_size=16), vae_steps=3, vae_batch=2)
    train_tokenizer("digits", dataclasses.replace(spec, vae_steps=2), tmp_path, ckpt_every=2, progress=False)
    assert run_seconds(tmp_path) == round(read_training_state(tmp_path / "step_0000002.pt")["seconds"])
    state = read_training_state(tmp_path / "step_0000002.pt")
    train_tokenizer("digits", spec, tmp_path, ckpt_every=2, progress=False)   # resumes at 2, ends at 3
    last = read_training_state(tmp_path / "step_0000003.pt")               # written although 3 % 2 != 0
    assert last["seconds"] > state["seconds"] > 0


def _tiny_digits_spec():
    spec = teacher_spec("digits")
    return dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, vocab_size=16), vae_steps=2, vae_batch=2,
                               var=dataclasses.replace(spec.var, depth=1, embed_dim=32, vocab_size=16),
                               var_steps=2, var_batch=2)


def test_train_teacher_on_a_given_tokenizer(tmp_path):
    spec = _tiny_digits_spec()
    first = train_teacher("digits", out_dir=tmp_path / "a", spec=spec, progress=False)
    paths = train_teacher("digits", out_dir=tmp_path / "b", spec=spec, progress=False, tokenizer=first["vae"])
    card = teacher_card("digits", tmp_path / "b")
    assert card["tokenizer_from"] == str(first["vae"]) and card["train_seconds"]["vae"] is None
    assert not (tmp_path / "b" / ".train_digits" / "vae").exists()          # no tokenizer was trained
    a, b = (read_training_state(p) for p in (first["vae"], paths["vae"]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, vocab_size=32))
    with pytest.raises(VarcompressError, match="architecture"):
        train_teacher("digits", out_dir=tmp_path / "c", spec=other, progress=False, tokenizer=first["vae"])


def test_train_teacher_continues_from_a_trained_var(tmp_path):
    spec = _tiny_digits_spec()
    first = train_teacher("digits", out_dir=tmp_path / "a", spec=spec, progress=False)
    start = read_training_state(first["var"])
    frozen = train_teacher("digits", out_dir=tmp_path / "b", spec=spec, progress=False, tokenizer=first["vae"],
                           var_init=first["var"], var_lr=0.0)   # lr 0: the continuation starts at `first`
    assert all(torch.equal(start[k], v) for k, v in read_training_state(frozen["var"]).items())
    card = teacher_card("digits", tmp_path / "b")
    assert card["continued_from"]["var_steps"] == 2 and card["var_lr"] == 0.0
    assert [n for n, _ in var_stages(card)] == [2, 2] and var_stages(card)[1][1] >= 0
    moved = train_teacher("digits", out_dir=tmp_path / "c", spec=spec, progress=False, tokenizer=first["vae"],
                          var_init=first["var"])
    assert not all(torch.equal(start[k], v) for k, v in read_training_state(moved["var"]).items())
    wider = dataclasses.replace(spec, var=dataclasses.replace(spec.var, embed_dim=64))
    with pytest.raises(VarcompressError, match="architecture"):
        train_teacher("digits", out_dir=tmp_path / "d", spec=wider, progress=False, tokenizer=first["vae"],
                      var_init=first["var"])
