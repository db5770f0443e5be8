"""Property-based fuzzing of the checkpoint loader (issue #7): whatever the bytes, one clear error or a model.

`read_state_dict` on arbitrary, truncated or bit-flipped `.pth` / `.safetensors` files returns
a dict of tensors or raises `VarcompressError`, never anything else. `load_var` on a mutated
state dict (dropped / extra key, wrong shape or dtype, NaN / inf, non-tensor) refuses it
with a one-line `VarcompressError`, or loads exactly the tensors in the file. A model
directory with an arbitrary `config.json` is refused in one line or loads.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import varcompress
from varcompress.checkpoint import read_state_dict, save_state_dict
from varcompress.errors import VarcompressError
from varcompress.formats.activated import read_activated_config
from varcompress.var_io import load_var

from .helpers import tiny_var

# 50 examples per property keeps the file fast; VARCOMPRESS_FUZZ_EXAMPLES=2000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("VARCOMPRESS_FUZZ_EXAMPLES", "50")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def work() -> Path:
    """A scratch folder shared by the examples of this module (each example overwrites its own file)."""
    d = Path(tempfile.mkdtemp(prefix="fuzz_ckpt_"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_var().state_dict().items()}


@pytest.fixture(scope="module")
def valid_files(work, state) -> dict[str, bytes]:
    """The bytes of one valid tiny checkpoint in each format."""
    from safetensors.torch import save_file

    save_state_dict(state, work / "valid.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(work / "valid.safetensors"))
    return {ext: (work / f"valid{ext}").read_bytes() for ext in (".pth", ".safetensors")}


def _read_or_refuse(path: Path):
    """The loader's contract: a dict of str -> Tensor, or one VarcompressError line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about pickle protocols it does not expect
        try:
            sd = read_state_dict(path)
        except VarcompressError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            return None
    assert isinstance(sd, dict)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
    return sd


# ---- read_state_dict on bytes ---------------------------------------------------------------------------
def _write(path: Path, data: bytes) -> Path:
    """Replace the file without touching a previous example's mmapped tensors (unlink, then write)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)
    return path


@FUZZ
@given(prefix=st.sampled_from(["", "pickle", "zip", "pth", "safetensors"]), data=st.binary(max_size=4096),
       ext=st.sampled_from([".pth", ".safetensors", ".bin"]))
def test_arbitrary_bytes(work, valid_files, prefix, data, ext):
    """Garbage of any kind never escapes as a raw exception, even behind a plausible header."""
    head = {"": b"", "pickle": b"\x80\x02", "zip": b"PK\x03\x04", "pth": valid_files[".pth"][:200],
            "safetensors": valid_files[".safetensors"][:200]}[prefix]
    assume(head or data)
    _read_or_refuse(_write(work / f"arbitrary{ext}", head + data))


@FUZZ
@given(ext=st.sampled_from([".pth", ".safetensors"]), frac=st.floats(0, 1, exclude_max=True))
def test_truncated_at_any_offset(work, valid_files, ext, frac):
    """A download cut short is refused: every proper prefix of a valid file is an error, not a model."""
    blob = valid_files[ext]
    cut = int(frac * len(blob))
    path = _write(work / f"truncated{ext}", blob[:cut])
    with pytest.raises(VarcompressError) as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


@FUZZ
@given(ext=st.sampled_from([".pth", ".safetensors"]),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8))
def test_flipped_bytes(work, valid_files, state, ext, flips):
    """Corruption anywhere (header, pickle, zip directory, data) is refused or yields tensors of the right keys."""
    blob = bytearray(valid_files[ext])
    for pos, mask in flips:
        blob[int(pos * len(blob))] ^= mask
    path = _write(work / f"flipped{ext}", bytes(blob))
    sd = _read_or_refuse(path)
    if sd is not None and ext == ".safetensors" and set(sd) == set(state):
        # what survived must be readable tensors of the right size (data flips only change values)
        assert all(sd[k].numel() == state[k].numel() for k in state)


def test_flipped_byte_in_the_data_still_loads(work, valid_files, state):
    """Anchor for the property above: a flip inside tensor data is a readable file with one changed value."""
    blob = bytearray(valid_files[".safetensors"])
    blob[-1] ^= 0x01
    path = work / "data_flip.safetensors"
    path.write_bytes(bytes(blob))
    sd = _read_or_refuse(path)
    assert sd is not None and set(sd) == set(state)
    assert sum(not torch.equal(sd[k], state[k]) for k in state) == 1


# ---- load_var on mutated state dicts ----------------------------------------------------------------------
INFERRED = ("word_embed.weight", "class_emb.weight", "head.weight", "blocks.0.ffn.fc1.weight", "lvl_1L",
            "blocks.0.attn.scale_mul_1H11", "attn_bias_for_masking", "pos_1LC")
MUTATIONS = ("drop", "extra", "shape", "dtype", "nonfinite", "non_tensor")
DTYPES = (torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool,
          torch.complex64)


@st.composite
def mutations(draw, state):
    """(kind, key, argument): one change to the state dict, small enough to read in a failure report."""
    kind = draw(st.sampled_from(MUTATIONS))
    keys = sorted(state)
    # half the time one of the tensors the architecture is read from (the likeliest to trip the inference)
    key = draw(st.sampled_from(INFERRED) | st.sampled_from(keys))
    arg = None
    if kind == "extra":
        key = draw(st.one_of(st.sampled_from([k.replace("blocks.0", "blocks.2") for k in keys if "blocks.0" in k]),
                             st.sampled_from(["encoder.conv_in.weight", "blocks.0.ffn.experts.0.w",
                                              "quantize.embedding.weight", "epoch"]),
                             st.text(min_size=1, max_size=20)))
        assume(key not in state)
        arg = draw(st.lists(st.integers(0, 3), max_size=3))
    elif kind == "shape":
        arg = draw(st.lists(st.integers(0, 70), max_size=3))
        assume(tuple(arg) != tuple(state[key].shape))
    elif kind == "dtype":
        arg = draw(st.sampled_from(DTYPES))
    elif kind == "nonfinite":
        key = draw(st.sampled_from([k for k in keys if state[k].is_floating_point() and state[k].numel()]))
        arg = (draw(st.integers(0, state[key].numel() - 1)), draw(st.sampled_from([math.nan, math.inf, -math.inf])))
    elif kind == "non_tensor":
        arg = draw(st.sampled_from([1, 2.5, "weights", None, [1, 2]]))
    return kind, key, arg


def mutate(state: dict, kind: str, key: str, arg) -> dict:
    sd = dict(state)
    if kind == "drop":
        del sd[key]
    elif kind == "extra":
        sd[key] = torch.zeros(arg)
    elif kind == "shape":
        sd[key] = torch.zeros(arg, dtype=state[key].dtype)
    elif kind == "dtype":
        sd[key] = state[key].to(arg)
    elif kind == "nonfinite":
        t = state[key].clone().reshape(-1)
        t[arg[0]] = arg[1]
        sd[key] = t.reshape(state[key].shape)
    else:
        sd[key] = arg
    return sd


@FUZZ
@given(data=st.data(), fmt=st.sampled_from([".pth", ".safetensors"]))
def test_load_var_on_mutated_state_dicts(work, state, data, fmt):
    """Refused in one line, or loaded exactly as stored (never a silently altered model)."""
    kind, key, arg = data.draw(mutations(state))
    assume(not (fmt == ".safetensors" and kind == "non_tensor"))  # safetensors cannot even store it
    sd = mutate(state, kind, key, arg)
    path = work / f"mutated{fmt}"
    path.unlink(missing_ok=True)  # a previous example's tensors may still be mmapped
    if fmt == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex -> real casts warn
        try:
            model = load_var(path)
        except VarcompressError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
            event(f"{kind}: refused")
            return
    event(f"{kind}: loaded")
    # it loaded: only a change that leaves a consistent VAR may get here, and the model holds the file's tensors
    assert kind in ("dtype", "shape", "nonfinite"), (kind, key)
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert got[k].shape == v.shape, k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.equal(got[k], v.to(got[k].dtype)), k
    if kind == "nonfinite":  # only -inf where the block-causal mask already has -inf is no change at all
        assert key == "attn_bias_for_masking" and torch.equal(sd[key], state[key])


def test_mutations_are_refused_for_the_right_reason(work, state):
    """Anchors for the property above: each mutation kind has a known one-line message."""
    swapped = state["lvl_1L"].clone()
    swapped[0, 4], swapped[0, 5] = 2, 1  # right counts per scale, wrong order
    plus_inf = state["attn_bias_for_masking"].clone()
    plus_inf[0, 0, 0, 0] = math.inf  # not NaN, so check_finite lets masks through; the layout check does not
    cases = {
        "drop": ({k: v for k, v in state.items() if k != "head.bias"}, "missing 1 key"),
        "extra": ({**state, "blocks.0.extra": torch.zeros(1)}, "unexpected 1 key"),
        "nonfinite": ({**state, "pos_1LC": state["pos_1LC"] * math.inf}, "NaN or inf"),
        "rank": ({**state, "word_embed.weight": torch.zeros(64)}, "word_embed.weight has shape"),
        "heads": ({**state, "blocks.0.attn.scale_mul_1H11": torch.zeros(1, 3, 1, 1)}, "3 heads"),
        "huge_level": ({**state, "lvl_1L": torch.full((1, 30), 10**12)}, "does not hold scale indices"),
        "float_level": ({**state, "lvl_1L": state["lvl_1L"] + 0.5}, "does not hold scale indices"),
        "level_order": ({**state, "lvl_1L": swapped}, "lvl_1L is not the scale layout"),
        "mask": ({**state, "attn_bias_for_masking": plus_inf}, "not the block-causal mask"),
    }
    for name, (sd, msg) in cases.items():
        path = work / f"{name}.pth"
        torch.save(sd, path)
        with pytest.raises(VarcompressError, match=msg) as e:
            load_var(path)
        assert "\n" not in str(e.value)
    torch.save({**state, "head.weight": state["head.weight"].half()}, work / "half.pth")
    assert load_var(work / "half.pth").head.weight.dtype == torch.float32  # a harmless dtype loads, as float32


# ---- model directories with an arbitrary config.json ------------------------------------------------------
@pytest.fixture(scope="module")
def act_dir(work) -> Path:
    from varcompress.convert import ConvertConfig, convert, save_activated

    var = tiny_var()
    calib = (torch.arange(4) % 10, torch.randn(4, var.L - 1, var.Cvae))
    model = convert(var, ConvertConfig(experts=4, top_k=2, router_steps=2, calib_tokens=64), calib=calib)
    return save_activated(model, work / "act")


# integers stay small: a huge `depth` makes load_activated build blocks for hours and gigabytes (a known bug in
# convert/api.py: the skeleton is built from config.json before the weights are read)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=12)


@st.composite
def config_texts(draw, card: dict):
    """Arbitrary text, arbitrary JSON, or the real card with one field (top-level or nested) replaced."""
    how = draw(st.sampled_from(["text", "json", "field", "var_config", "convert_config"]))
    if how == "text":
        return draw(st.text(max_size=200))
    if how == "json":
        return json.dumps(draw(JSON))
    c = json.loads(json.dumps(card))
    node = c if how == "field" else c[how]
    field = draw(st.sampled_from(sorted(node) + ["unknown_field"]))
    if draw(st.booleans()) and field in node:
        del node[field]
    else:
        node[field] = draw(JSON)
    return json.dumps(c)


def _hits_known_bug(text: str, card: dict) -> bool:
    """Cards that reach the convert/api.py bugs pinned by test_known_config_bugs (kept out of the fuzz)."""
    try:
        c = json.loads(text)
    except ValueError:
        return False
    if not isinstance(c, dict):
        return False
    try:
        dict(c.get("var_config") or {})  # what VARConfig.from_dict does first
    except TypeError:  # load_activated turns this one into "malformed"
        pass
    except ValueError:
        return True
    cc = c.get("convert_config")
    if not isinstance(cc, dict):
        return False
    depth, scales = card["var_config"]["depth"], len(card["var_config"]["patch_nums"])
    hidden = round(card["var_config"]["embed_dim"] * card["var_config"]["mlp_ratio"])
    top_k, keep, experts = cc.get("top_k"), cc.get("keep_ratio"), cc.get("experts")
    return (isinstance(top_k, list) and len(top_k) != depth) or (isinstance(keep, list) and len(keep) != scales) \
        or (isinstance(experts, int) and experts >= 1 and hidden % experts != 0)


def _dir_with_card(act_dir: Path, work: Path, text: str) -> Path:
    d = work / "fuzz_dir"
    d.mkdir(exist_ok=True)
    shutil.copy(act_dir / "model.safetensors", d / "model.safetensors")
    (d / "config.json").write_text(text)
    return d


@FUZZ
@given(data=st.data())
def test_model_dir_with_arbitrary_config(act_dir, work, data):
    """config.json is user-editable text: anything in it is refused in one line or loads the model."""
    card = json.loads((act_dir / "config.json").read_text())
    text = data.draw(config_texts(card))
    assume(not _hits_known_bug(text, card))
    d = _dir_with_card(act_dir, work, text)
    for fn in (read_activated_config, varcompress.load):
        try:
            fn(d)
        except VarcompressError as e:
            assert "\n" not in str(e), str(e)


@pytest.mark.parametrize("section,field,value", [
    ("var_config", None, "0"),
    ("convert_config", "experts", 3),
    ("convert_config", "top_k", [2]),
    ("convert_config", "keep_ratio", [1.0, 0.5]),
])
def test_cards_the_fuzz_found(act_dir, work, section, field, value):
    """Cards the fuzz found escaping as raw exceptions (now fixed): each is one VarcompressError."""
    card = json.loads((act_dir / "config.json").read_text())
    if field is None:
        card[section] = value
    else:
        card[section][field] = value
    d = _dir_with_card(act_dir, work, json.dumps(card))
    with pytest.raises(VarcompressError):
        varcompress.load(d).budget()  # budget(): a model that loads must also work


def test_model_dir_config_anchor(act_dir, work):
    """Anchor: the unmodified directory loads, and a non-JSON card is one line naming the file."""
    assert varcompress.load(act_dir) is not None
    d = work / "anchor_dir"
    d.mkdir(exist_ok=True)
    shutil.copy(act_dir / "model.safetensors", d / "model.safetensors")
    (d / "config.json").write_text("{")
    with pytest.raises(VarcompressError, match=r"config\.json: invalid JSON"):
        varcompress.load(d)
