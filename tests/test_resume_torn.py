"""Issue #15: a torn newest checkpoint (power loss, full disk) is skipped with one warning line and the
run resumes from the previous one, ending with the weights of an uninterrupted run; a torn last line of
the metrics log is tolerated and cut."""
from __future__ import annotations

import dataclasses
import json
import shutil

import torch

from varcompress.checkpoint import read_state_dict
from varcompress.distill import distill
from varcompress.testbed.teachers import teacher_spec
from varcompress.testbed.train import train_tokenizer, train_var
from varcompress.training.resume import checkpoints, load_latest, save_training_state

from .test_distill_common import tiny_recipe, tiny_teacher  # noqa: F401  (fixture)


def _tear(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_load_latest_falls_back_past_torn_and_incomplete_states(tmp_path, capsys):
    for s in (1, 2, 3):
        save_training_state(tmp_path, s, {"model": {"w": torch.full((2,), float(s))}, "opt": {}}, keep=3)
    _tear(tmp_path / "step_0000003.pt")
    save_training_state(tmp_path, 2, {"model": {"w": torch.tensor([float("nan")])}, "opt": {}}, keep=3)
    path, state = load_latest(tmp_path, ("model", "opt"), "model")
    assert path.name == "step_0000001.pt" and float(state["model"]["w"][0]) == 1.0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "corrupt or truncated" in lines[0] and "falling back to step_0000002.pt" in lines[0]
    assert "NaN" in lines[1] and "falling back to step_0000001.pt" in lines[1]
    _tear(tmp_path / "step_0000001.pt")
    assert load_latest(tmp_path, ("model", "opt"), "model") is None
    assert "starting from scratch" in capsys.readouterr().err


def test_distill_resumes_past_a_torn_newest_checkpoint(tiny_teacher, tmp_path, capsys):
    ref = tiny_recipe(tiny_teacher, tmp_path / "ref", tmp_path / "cache", steps=(3, 3))
    ref["eval"]["converted"] = False
    distill(ref)
    r = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache", steps=(3, 3))
    r["eval"]["converted"] = False
    distill(r)
    run = tmp_path / "run"
    # as if the power went out while the last checkpoint and log line were written
    (run / "result.json").unlink()
    shutil.rmtree(run / "student")
    assert [p.name for p in checkpoints(run / "ckpt")] == ["step_0000004.pt", "step_0000006.pt"]
    _tear(run / "ckpt" / "step_0000006.pt")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "los')
    capsys.readouterr()
    distill(r)
    err = capsys.readouterr().err
    assert "step_0000006.pt: corrupt or truncated checkpoint" in err and "falling back to step_0000004.pt" in err
    a, b = (read_state_dict(d / "student" / "model.safetensors") for d in (tmp_path / "ref", run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_testbed_train_resumes_past_a_torn_newest_checkpoint(tmp_path, capsys):
    spec = teacher_spec("digits")
    spec = dataclasses.replace(spec, vae=dataclasses.replace(spec.vae, vocab_size=16), vae_steps=4, vae_batch=2,
                               var=dataclasses.replace(spec.var, depth=1, embed_dim=32, vocab_size=16),
                               var_steps=4, var_batch=2)
    vae = train_tokenizer("digits", spec, tmp_path / "ref" / "vae", ckpt_every=2, progress=False)
    full = train_var("digits", spec, vae, tmp_path / "ref" / "var", ckpt_every=2, progress=False)
    vae2 = train_tokenizer("digits", spec, tmp_path / "run" / "vae", ckpt_every=2, progress=False)
    train_var("digits", spec, vae2, tmp_path / "run" / "var", ckpt_every=2, progress=False)
    # a second run, its newest checkpoints torn (power loss while they were written)
    _tear(tmp_path / "run" / "vae" / "step_0000004.pt")
    _tear(tmp_path / "run" / "var" / "step_0000004.pt")
    capsys.readouterr()
    vae3 = train_tokenizer("digits", spec, tmp_path / "run" / "vae", ckpt_every=2, progress=False)
    resumed = train_var("digits", spec, vae3, tmp_path / "run" / "var", ckpt_every=2, progress=False)
    err = capsys.readouterr().err
    assert err.count("falling back to step_0000002.pt") == 2
    for (k, a), b in zip(vae.state_dict().items(), vae3.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
