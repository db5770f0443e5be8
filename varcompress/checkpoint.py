"""Safe reading and atomic writing of state dicts (.pth and .safetensors).

Every load goes through `read_state_dict` (or `read_training_state` for resumable training
states), which only unpickle plain tensors (`weights_only=True`) and turn every failure
into one clear `VarcompressError`. `save_state_dict` writes the official format through
`durable.atomic_write`, the one writing mechanism.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .durable import atomic_write
from .errors import VarcompressError


def read_state_dict(path: str | os.PathLike, mmap: bool = True) -> dict[str, torch.Tensor]:
    """Load a state dict from `.pth` or `.safetensors`, refusing anything but tensors."""
    path = _check_file(path)
    if path.suffix == ".safetensors":
        sd = _read_safetensors(path)
    else:
        sd = _read_torch(path, mmap)
    if not isinstance(sd, Mapping):
        raise VarcompressError(f"{path}: not a state_dict (found {type(sd).__name__})")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise VarcompressError(f"{path}: not a state_dict of tensors (entry {bad[0]!r})")
    return dict(sd)


def read_training_state(path: str | os.PathLike) -> dict:
    """A resumable training state (nested dicts of tensors, numbers, strings) through the same
    weights_only reader; a torn or corrupt file is one `VarcompressError`."""
    path = _check_file(path)
    state = _read_torch(path, mmap=False)
    if not isinstance(state, Mapping):
        raise VarcompressError(f"{path}: not a training state (found {type(state).__name__})")
    return dict(state)


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        if not path.exists():
            raise VarcompressError(f"{path}: no such file")
        if path.is_dir():
            raise VarcompressError(f"{path}: is a directory, expected a checkpoint file")
        if path.stat().st_size == 0:
            raise VarcompressError(f"{path}: file is empty")
    except OSError as e:
        raise VarcompressError(f"{path}: {e.strerror or e}") from None
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise VarcompressError(f"{path}: corrupt or truncated safetensors file ({first_line(e)})") from None


def _read_torch(path: Path, mmap: bool):
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols would be extra lines on stderr
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as e:  # legacy (non-zip) files cannot be mmapped
                if mmap and "mmap" in str(e):
                    return torch.load(path, map_location="cpu", weights_only=True)
                raise
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        if _REFUSED.search(str(e)) or _pickle_builds_objects(path):
            raise VarcompressError(
                f"{path}: refused, the file holds Python objects beyond tensors "
                f"(only weights_only=True loading is allowed: {reason})"
            ) from None
        raise VarcompressError(f"{path}: corrupt or truncated checkpoint ({reason})") from None
    except Exception as e:  # torch.load on garbage raises anything from EOFError to IndexError
        raise VarcompressError(f"{path}: corrupt or truncated checkpoint ({first_line(e)})") from None


# What torch's weights-only unpickler says when a file asks for a Python object it will not build
# (as opposed to bytes it cannot parse at all: "Unsupported operand", "String is too long", ...).
_REFUSED = re.compile(r"GLOBAL|Unsupported global|Can only (?:build|create|append|extend)|allowlist|must be imported")
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)",
                      "Re-running `torch.load`")


def _pickle_builds_objects(path: Path) -> bool:
    """Whether the file is a well-formed pickle that imports or builds Python objects.

    torch's unpickler stops at the first opcode it does not support (the FRAME of protocol 4,
    say) before it sees the GLOBAL; pickletools only parses opcodes, it never runs them. Only
    the first 16 MiB are scanned (from memory, so a garbage length field cannot ask for more).
    """
    try:
        with open(path, "rb") as f:
            head = io.BytesIO(f.read(16 << 20))
        return any(op.name in _OBJECT_OPS for op, _, _ in pickletools.genops(head))
    except Exception:  # noqa: BLE001 - not a pickle at all: garbage, or a torch file torch could not read
        return False


_OBJECT_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE", "EXT1", "EXT2", "EXT4"}


def _unpickler_reason(e: BaseException) -> str:
    """The unpickler's own complaint, without torch's multi-line advice around it."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_TORCH_BOILERPLATE)]
    return lines[0][:200] if lines else type(e).__name__


def first_line(e: BaseException) -> str:
    """An exception's first line (at most 200 characters), for one-line error messages."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def check_finite(sd: Mapping[str, torch.Tensor], what: str, masks: tuple[str, ...] = ()) -> None:
    """Refuse NaN/inf weights: they would silently poison every metric downstream.

    Keys in `masks` are additive attention masks, where -inf is legitimate (NaN is not).
    """
    for k, v in sd.items():
        if not v.is_floating_point() or v.device.type == "meta":
            continue
        bad = torch.isnan(v).any() if k in masks else not torch.isfinite(v).all()
        if bad:
            raise VarcompressError(f"{what}: tensor {k!r} contains NaN or inf")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike, force: bool = True) -> Path:
    """Save in the official format (a bare dict of tensors, torch.save) atomically."""
    clean = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    return atomic_write(path, lambda tmp: torch.save(clean, tmp), force=force)


def read_format_json(path: str | os.PathLike, fmt: str, max_version: int, kind: str) -> dict:
    """Read a model directory's JSON card; refuse other formats and newer versions (one line each)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VarcompressError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise VarcompressError(f"{path}: not a varcompress {kind}")
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise VarcompressError(f"{path}: format_version must be a non-negative integer, got {version!r}")
    if version > max_version:
        raise VarcompressError(f"{path}: format version {version} is newer than this varcompress")
    return data
