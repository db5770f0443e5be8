"""CPU helpers: glibc malloc tuning for large tensors, and a description of the CPU.

PyTorch's CPU allocator is plain malloc. glibc serves every block above its mmap
threshold (128 KiB, raised dynamically up to 32 MiB) with a fresh mmap and returns it
on free, and it trims the heap top eagerly, so each large intermediate tensor is
page-faulted in again; in a VM a page fault is expensive. `tuned_malloc()` raises the
mmap and trim thresholds (what LD_PRELOAD=jemalloc/tcmalloc achieves) while generating;
on leaving it sets the thresholds back to glibc's initial values (fixed, not dynamic:
glibc cannot be put back into its dynamic mode). It is process-wide and a no-op where
glibc is absent.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_GLIBC_DEFAULT = 128 * 1024
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if platform.system() == "Linux":
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "gnu_get_libc_version"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def set_malloc(tuned: bool) -> bool:
    """Large thresholds (tuned) or glibc's initial fixed 128 KiB ones; returns False without glibc."""
    lib = _glibc()
    if lib is None:
        return False
    if tuned:
        ok = lib.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and lib.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
        ok = ok and lib.mallopt(_M_TOP_PAD, 64 << 20)
    else:
        ok = lib.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT) and lib.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
        ok = ok and lib.mallopt(_M_TOP_PAD, 0)
    return bool(ok)


@contextlib.contextmanager
def tuned_malloc(enable: bool = True):
    """Tune glibc malloc for the duration of the block (no-op when disabled or without glibc)."""
    done = enable and set_malloc(True)
    try:
        yield done
    finally:
        if done:
            set_malloc(False)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 matmuls (AVX512-BF16 / AMX on x86, or any non-x86 torch build)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = " ".join(line for line in f if line.startswith("flags"))
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"device": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"device": "cpu", "name": cpu_name(), "threads": torch.get_num_threads(),
            "logical_cpus": os.cpu_count(), "bf16_native": cpu_supports_bf16()}
