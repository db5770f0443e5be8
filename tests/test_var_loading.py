"""Loading VAR checkpoints: round trip, and one clear line for every bad file."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import varcompress
from varcompress import VarcompressError
from varcompress.checkpoint import save_state_dict

from .helpers import tiny_var


@pytest.fixture
def saved(tmp_path):
    model = tiny_var()
    path = save_state_dict(model.state_dict(), tmp_path / "var.pth")
    return model, path


def test_save_load_round_trip(saved):
    model, path = saved
    loaded = varcompress.load_var(path)
    x, y = torch.randn(2, model.L - 1, model.Cvae), torch.tensor([0, 9])
    assert torch.equal(loaded(y, x), model(y, x))


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    model = tiny_var()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "var.safetensors"))
    loaded = varcompress.load_var(tmp_path / "var.safetensors")
    x, y = torch.randn(1, model.L - 1, model.Cvae), torch.tensor([4])
    assert torch.equal(loaded(y, x), model(y, x))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/varcompress_pwned",))


def _write(tmp_path, obj, name="bad.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("empty", "file is empty"),
    ("truncated", "corrupt or truncated"),
    ("garbage", "corrupt"),
    ("pickle_code", "refused"),
    ("not_dict", "not a state_dict"),
    ("vae", "looks like a VQVAE"),
    ("missing_key", "missing 1 key"),
    ("unexpected_key", "unexpected 1 key"),
    ("wrong_shape", "has shape"),
    ("nan", "NaN or inf"),
    ("bad_levels", "square scales"),
])
def test_bad_files_give_one_clear_line(tmp_path, saved, case, message):
    model, good = saved
    sd = dict(model.state_dict())
    if case == "missing":
        path = tmp_path / "nope.pth"
    elif case == "empty":
        path = tmp_path / "empty.pth"
        path.write_bytes(b"")
    elif case == "truncated":
        path = tmp_path / "trunc.pth"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "garbage":
        path = tmp_path / "garbage.pth"
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif case == "pickle_code":
        path = tmp_path / "evil.pth"
        with open(path, "wb") as f:
            pickle.dump({"w": Evil()}, f)
    elif case == "not_dict":
        path = _write(tmp_path, [torch.zeros(1)])
    elif case == "vae":
        path = _write(tmp_path, {"quantize.embedding.weight": torch.zeros(4, 2), "encoder.conv_in.weight": torch.zeros(1)})
    elif case == "missing_key":
        del sd["head.bias"]
        path = _write(tmp_path, sd)
    elif case == "unexpected_key":
        sd["blocks.0.extra"] = torch.zeros(1)
        path = _write(tmp_path, sd)
    elif case == "wrong_shape":
        sd["head.bias"] = torch.zeros(3)
        path = _write(tmp_path, sd)
    elif case == "nan":
        sd["head.bias"] = sd["head.bias"].clone().fill_(float("nan"))
        path = _write(tmp_path, sd)
    elif case == "bad_levels":
        sd["lvl_1L"] = torch.tensor([[0, 1, 1]])
        path = _write(tmp_path, sd)
    with pytest.raises(VarcompressError, match=message) as info:
        varcompress.load_var(path)
    assert "\n" not in str(info.value)
    assert not os.path.exists("/tmp/varcompress_pwned")
