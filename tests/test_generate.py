"""`varcompress generate`: PNG outputs, per-class seeding, the FID .npz (also under torchrun), refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import varcompress
from varcompress.checkpoint import save_state_dict
from varcompress.cli import main
from varcompress.errors import VarcompressError
from varcompress.generate.images import generate_images
from varcompress.models.var import VAR
from varcompress.models.vqvae import DEFAULT_PATCH_NUMS, VQVAE, VQVAEConfig

from .helpers import tiny_var

SAMPLING = dict(cfg=1.0, top_k=8, top_p=0.9)
FLAGS = ("--cfg", "1.0", "--top-k", "8", "--top-p", "0.9", "--device", "cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny VAR + VQVAE on disk (16x16 images, 10 classes) and the same model loaded back.

    The official 10 scales: `--vae` files are read with them (resolve.load_vae_for)."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1,), num_res_blocks=1, using_sa=False,
                            using_mid_sa=False, patch_nums=DEFAULT_PATCH_NUMS))
    with torch.no_grad():
        vae.quantize.embedding.weight.normal_()
    save_state_dict(tiny_var(0, patch_nums=DEFAULT_PATCH_NUMS).state_dict(), folder / "var.pth")
    save_state_dict(vae.state_dict(), folder / "vae.pth")
    var = varcompress.load_var(folder / "var.pth", vae=varcompress.load_vae(folder / "vae.pth"))
    return folder / "var.pth", folder / "vae.pth", var


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_out_writes_grid_per_image_pngs_and_manifest(capsys, tmp_path, tiny):
    ckpt, vae, var = tiny
    out = tmp_path / "samples"
    code, stdout, err = run(capsys, "generate", ckpt, "--vae", vae, "--classes", "4,1", "-n", 3, "--batch", 2,
                            "--seed", 5, "--out", out, "--per-image", *FLAGS)
    assert code == 0 and stdout.startswith(f"wrote {out}: 6 images of 16x16"), err
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 * (16 + 2) + 2, 3 * (16 + 2) + 2, 3)  # a row per class, 3 columns, 2 px padding
    want = generate_images(var, [1, 4], 3, seed=5, batch=2, **SAMPLING)
    for j, (c, i) in enumerate((c, i) for c in (1, 4) for i in range(3)):
        png = np.asarray(Image.open(out / f"class{c:04d}" / f"{i:05d}.png"))
        y, x = 2 + (j // 3) * 18, 2 + (j % 3) * 18
        assert np.array_equal(png, want[j]) and np.array_equal(grid[y:y + 16, x:x + 16], png)
    m = json.loads((out / "samples.json").read_text())
    assert m["classes"] == [1, 4] and m["n_per_class"] == 3 and m["seed"] == 5 and m["batch"] == 2
    assert m["sampling"] == SAMPLING and m["image_size"] == [16, 16] and "SeedSequence" in m["seeding"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]  # no temp folder left


def test_testbed_model_uses_its_card_sampling(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "digits", "--classes", "0-1", "-n", 1, "--out", tmp_path / "g")
    assert code == 0, err
    m = json.loads((tmp_path / "g" / "samples.json").read_text())
    assert m["sampling"] == varcompress.testbed.teachers.teacher_card("digits")["sampling"]
    assert Image.open(tmp_path / "g" / "grid.png").size == (34 + 2, 2 * 34 + 2)  # (W, H): 32x32 digits, a row per class
    assert not (tmp_path / "g" / "class0000").exists()  # no per-image files without --per-image


def test_same_seed_same_images_other_seed_other_images(tiny):
    var = tiny[2]
    a, b = (generate_images(var, [2, 7], 2, seed=1, batch=2, **SAMPLING) for _ in range(2))
    assert a.dtype == np.uint8 and a.shape == (4, 16, 16, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, generate_images(var, [2, 7], 2, seed=2, batch=2, **SAMPLING))


def test_a_class_does_not_depend_on_the_other_classes_drawn(tiny):
    var = tiny[2]
    every = generate_images(var, range(5), 4, seed=3, batch=2, **SAMPLING)
    assert np.array_equal(generate_images(var, [3], 4, seed=3, batch=2, **SAMPLING), every[12:16])
    assert np.array_equal(generate_images(var, [3, 9], 2, seed=3, batch=2, **SAMPLING)[:2], every[12:14])
    assert not np.array_equal(every[12:16], every[16:20])  # classes do not share a stream


def test_npz_is_the_fid_format(capsys, tmp_path, tiny):
    ckpt, vae, var = tiny
    code, _, err = run(capsys, "generate", ckpt, "--vae", vae, "--npz", tmp_path / "s.npz", "--classes", "7,2,5",
                       "--seed", 3, "--batch", 2, "-n", 3, *FLAGS)
    assert code == 0, err
    with np.load(tmp_path / "s.npz") as z:
        arr, labels = z["arr_0"], z["arr_1"]
    assert arr.dtype == np.uint8 and arr.shape == (9, 16, 16, 3)  # N, H, W, 3
    assert np.array_equal(labels, [2, 2, 2, 5, 5, 5, 7, 7, 7])
    assert np.array_equal(arr, generate_images(var, [2, 5, 7], 3, seed=3, batch=2, **SAMPLING))
    code, _, err = run(capsys, "generate", ckpt, "--vae", vae, "--npz", tmp_path / "c3.npz", "--classes", "3",
                       *FLAGS)
    assert code == 0, err
    with np.load(tmp_path / "c3.npz") as z:
        assert z["arr_0"].shape == (50, 16, 16, 3) and set(z["arr_1"]) == {3}  # FID protocol: 50 per class
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3.npz", "s.npz"]  # no shards left


# ~9 s on an idle 2-core box (launcher + 2 interpreters importing torch); ~20 s next to a training job
def test_torchrun_two_processes_write_the_same_npz(capsys, tmp_path, tiny):
    ckpt, vae, _ = tiny
    args = ["generate", ckpt, "--vae", vae, "--classes", "0-4", "-n", 3, "--batch", 2, *FLAGS]
    assert run(capsys, *args, "--npz", tmp_path / "one.npz")[0] == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "varcompress.cli", *map(str, args), "--npz", str(tmp_path / "two.npz")]
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]  # shards removed


def test_existing_outputs_are_kept_without_force_and_replaced_with_it(capsys, tmp_path, tiny):
    ckpt, vae, _ = tiny
    out, npz = tmp_path / "out", tmp_path / "s.npz"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    npz.write_bytes(b"old")
    for target in (("--out", out), ("--npz", npz)):
        code, _, err = run(capsys, "generate", ckpt, "--vae", vae, *target, *FLAGS)
        assert code == 2 and "exists (use --force to overwrite)" in err and "sampling" not in err  # before sampling
    assert (out / "mine.txt").read_text() == "keep" and npz.read_bytes() == b"old"
    assert run(capsys, "generate", ckpt, "--vae", vae, "-n", 1, "--classes", 0, "--out", out, "--force", *FLAGS)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "samples.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.npz"]


def test_a_failure_while_sampling_leaves_nothing_behind(capsys, tmp_path, tiny, monkeypatch):
    ckpt, vae, _ = tiny
    real, calls = VAR.autoregressive_infer_cfg, []

    def fail_on_third_call(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise VarcompressError("sampling broke")
        return real(self, *a, **kw)

    monkeypatch.setattr(VAR, "autoregressive_infer_cfg", fail_on_third_call)
    for target in (("--out", tmp_path / "out", "--per-image"), ("--npz", tmp_path / "s.npz")):
        calls.clear()
        code, _, err = run(capsys, "generate", ckpt, "--vae", vae, "--classes", "0-1", "-n", 2, "--batch", 1, *target,
                           *FLAGS)
        assert code == 2 and "error: sampling broke" in err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "generate", ckpt, "--vae", vae, "--npz", tmp_path / "file" / "s.npz", *FLAGS)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1  # an OSError, still one line


@pytest.mark.parametrize("args,message", [
    (("--classes", "10", "--out", "OUT"), "'10' is not a class or range within 0-9"),
    (("--classes", "5-2", "--out", "OUT"), "'5-2' is not a class or range"),
    (("--classes", "one", "--out", "OUT"), "expected classes and ranges like 0,3,5-9"),
    (("-n", "0", "--out", "OUT"), "--n-per-class must be >= 1"),
    (("--cfg", "-1", "--out", "OUT"), "--cfg must be >= 0"),
    (("--top-p", "1.0", "--out", "OUT"), "--top-p must be in [0, 1)"),
    (("--seed", "-1", "--npz", "OUT.npz"), "--seed must be >= 0"),
    ((), "nothing to write: give --out"),
    (("--out", "OUT", "--npz", "OUT.npz"), "not both"),
    (("--npz", "OUT"), "does not end in .npz"),
    (("--per-image", "--npz", "OUT.npz"), "--per-image needs --out"),
    (("--device", "tpu", "--out", "OUT"), "--device: expected auto, cpu or cuda"),
    (("MODEL", "/no/such.pth", "--out", "OUT"), "no such file"),
    (("MODEL", "VAR_ONLY", "--out", "OUT"), "pass --vae"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, tiny, args, message):
    ckpt, vae, _ = tiny
    model = ["generate", ckpt, "--vae", vae]
    if args and args[0] == "MODEL":
        model, args = ["generate", ckpt if args[1] == "VAR_ONLY" else args[1]], args[2:]
    args = [str(tmp_path / "out") + a[3:] if a.startswith("OUT") else a for a in args]
    code, _, err = run(capsys, *model, *args)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
