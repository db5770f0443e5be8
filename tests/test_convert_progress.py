"""Issue #15: convert speaks (a tqdm bar with ETA in every phase) and is cheaper without changing its
result: calibration tokens drawn through the engine without decoding, sensitivity probes started from
the cached input of the probed block (the same KL as full teacher-forced passes)."""
from __future__ import annotations

import torch

from varcompress.convert import ConvertConfig, api, budget, calibrate, convert
from varcompress.convert.budget import KEEP_LEVELS, _fraction, _sparse, kl_to_teacher, measure_sensitivity
from varcompress.engine import Engine
from varcompress.engine.decode import FastDecoder
from varcompress.models.var import with_uncond

from .helpers import tiny_var
from .test_generation import tiny_vae


def _activated(var):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, var.num_classes, (8,), generator=g)
    x = torch.randn(8, var.L - var.first_l, var.Cvae, generator=g)
    cfg = ConvertConfig(experts=4, sparse_scales=2, calib_tokens=512, router_steps=5)
    return convert(var, cfg, calib=(labels, x)), with_uncond(var, labels[:4], x[:4])


def _full_pass_sensitivity(model, labels, x, t):
    """The previous implementation: every probe a full teacher-forced pass from the embedding."""
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    E, lo = cfg.routed_experts, (0 if cfg.shared_experts else 1)
    _fraction(model, [E] * depth, [1.0] * S)
    base = kl_to_teacher(model, labels, x, t)
    block = []
    for b in range(depth):
        row = {E: base}
        for k in range(E - 1, lo - 1, -1):
            _fraction(model, [E] * b + [k] + [E] * (depth - b - 1), [1.0] * S)
            row[k] = kl_to_teacher(model, labels, x, t)
        block.append(row)
    scale = {}
    for s in _sparse(model):
        scale[s] = {1.0: base}
        for r in KEEP_LEVELS:
            _fraction(model, [E] * depth, [r if u == s else 1.0 for u in range(S)])
            scale[s][r] = kl_to_teacher(model, labels, x, t)
    _fraction(model, [E] * depth, [1.0] * S)
    return {"base": base, "block": block, "scale": scale}


def test_sensitivity_from_cached_block_inputs_equals_full_passes():
    var = tiny_var(depth=3).attach_vae(tiny_vae())
    model, (labels, x) = _activated(var)
    t = calibrate.teacher_logits(var, labels, x)
    new = measure_sensitivity(model, labels, x, t)
    old = _full_pass_sensitivity(model, labels, x, t)
    assert new["base"] == old["base"]
    for a, b in zip(new["block"], old["block"]):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 + 1e-6 * abs(b[k]) for k in a)
    assert new["scale"] == old["scale"]


def test_calibration_is_drawn_by_the_engine_without_decoding(monkeypatch):
    var = tiny_var().attach_vae(tiny_vae())
    expect = Engine(var, dtype=torch.float32).generate(3, torch.tensor([1, 2, 3]), g_seed=7, cfg=1.5, top_k=4,
                                                       top_p=0.9, return_idx=True)[1]
    monkeypatch.setattr(FastDecoder, "__call__", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, var.num_classes, (3,), generator=g)
    got_labels, x = calibrate.calibration_data(var, 3, seed=7, cfg=1.5, top_k=4, top_p=0.9)
    assert torch.equal(got_labels, labels)
    if torch.equal(labels, torch.tensor([1, 2, 3])):
        assert torch.equal(x, var.vae.idxBl_to_var_input(expect))
    assert x.shape == (3, var.L - var.first_l, var.Cvae)


def test_every_phase_shows_a_bar(monkeypatch, capsys):
    for mod in (calibrate, api, budget):
        monkeypatch.setattr(mod, "bar_off", lambda progress: not progress)  # as on a terminal
    var = tiny_var().attach_vae(tiny_vae())
    cfg = ConvertConfig(experts=4, calib_samples=4, calib_tokens=256, router_steps=2, flops_target=0.7,
                        sparse_scales=2, selector="learned")
    convert(var, cfg, progress=True)
    err = capsys.readouterr().err
    for desc in ("convert: drawing calibration", "convert: calibrating blocks", "convert: sensitivity probes"):
        assert f"{desc}: 100%" in err, desc
    for phase in ("capture", "clustering", "router", "selector"):
        assert f"block 1 {phase}" in err, phase
    assert "<" in err  # tqdm's elapsed<remaining: the ETA
    convert(var, cfg, progress=False)
    assert capsys.readouterr().err == ""
