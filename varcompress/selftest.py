"""`varcompress selftest`: every engine path this machine has, checked against the eager reference.

Why: the engine's fast paths (bf16, grouped-GEMM expert dispatch, CUDA graphs, torch.compile,
DDP sharding) differ by device and build; a user should know in a minute that they agree
with the reference on their machine before trusting a benchmark or a sample.

A tiny random VAR (and an activated copy of it, converted with routed experts and token
gating) generates greedily (top_k=1) through the eager float32 path: the reference tokens
and guided logits of every scale. Each path generates the same images and must give
(1) logits within TOLERANCE[dtype] * max(1, max |reference logit|) of the reference at
every scale whose prefix is the same, and (2) the same greedy tokens; a different token is
accepted only at a near tie (the reference's logit of the chosen token within the
tolerance of its maximum), after which the sequences legitimately part. Rows: passed,
failed (with the difference) or skipped (with the reason).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from .activated.config import ConvertConfig
from .convert.api import convert
from .engine import Engine
from .engine.experts import _grouped_mm_runs, grouped_mm_ok
from .errors import VarcompressError
from .models.var import VARConfig
from .models.vqvae import VQVAE, VQVAEConfig
from .var_io import build_var

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2}  # relative to max(1, max |reference logit|)
# Reduced-precision activated paths: expert routing and token selection are discrete, and a near tie
# may flip one token's choice (seen on CPU bf16: 3.6% of a scale's logits); up to this share may exceed
# the tolerance there, with the mean error still within a quarter of it.
DISCRETE_SHARE = 0.10
LABELS = (3, 5, 1, 7)
CFG = 1.5


@dataclass
class Row:
    path: str
    status: str   # passed | failed | skipped
    detail: str = ""
    seconds: float = 0.0


def tiny_models(seed: int = 0):
    """A random 2-block VAR with its VQVAE, and an activated copy (top-2 of 4 experts, half the tokens)."""
    torch.manual_seed(seed)
    var = build_var(VARConfig(depth=2, embed_dim=64, num_heads=2, vocab_size=32, Cvae=8, num_classes=10,
                              patch_nums=(1, 2, 3, 4)))
    with torch.no_grad():
        for name, p in var.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "scale_mul" in name else 0.08))
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                            patch_nums=(1, 2, 3, 4)))
    with torch.no_grad():
        vae.quantize.embedding.weight.normal_()
    var = var.eval().attach_vae(vae.eval())
    g = torch.Generator().manual_seed(seed)
    calib = (torch.randint(0, 10, (16,), generator=g), torch.randn(16, var.L - var.first_l, var.Cvae, generator=g))
    cfg = ConvertConfig(experts=4, top_k=2, keep_ratio=0.5, sparse_scales=2, calib_tokens=512, router_steps=10)
    return var, convert(var, cfg, calib=calib)


@torch.no_grad()
def eager_reference(model) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Greedy tokens and guided float32 logits per scale of the model's own eager generation."""
    raw, B, S = [], len(LABELS), len(model.patch_nums)
    real = model.get_logits
    model.get_logits = lambda h, cond: raw.append(real(h, cond)) or raw[-1]
    try:
        _, idx = model.autoregressive_infer_cfg(B, torch.tensor(LABELS), g_seed=0, cfg=CFG, top_k=1,
                                                return_idx=True)
    finally:
        del model.get_logits
    guided = []
    for si, lg in enumerate(raw):
        t = CFG * si / (S - 1)
        guided.append((1 + t) * lg[:B] - t * lg[B:])
    return idx, guided


def compare(ref, got, dtype, discrete: bool = False) -> tuple[bool, str]:
    """(passed, detail) of a path's (tokens, logits) per scale against the reference's.

    `discrete`: the model has gates whose near ties may flip in reduced precision (DISCRETE_SHARE).
    """
    (ref_idx, ref_lg), (idx, lg) = ref, got
    scale_max = max(float(r.abs().max()) for r in ref_lg)
    tol = TOLERANCE[dtype] * max(1.0, scale_max)
    share = DISCRETE_SHARE if discrete and dtype != torch.float32 else 0.0
    worst = 0.0
    for si, (ri, r, i, g) in enumerate(zip(ref_idx, ref_lg, idx, lg)):
        d = (g.float().cpu() - r).abs()
        diff, over = float(d.max()), float((d > tol).float().mean())
        worst = max(worst, diff)
        if over > share or (over and float(d.mean()) > tol / 4):
            return False, (f"scale {si}: logits differ by up to {diff:.3g}, {over:.1%} beyond the tolerance "
                           f"{tol:.3g} (allowed {share:.0%})")
        i = i.cpu()
        if not torch.equal(ri, i):
            # a flip is a near tie when the reference's margin is within what the path's own logit
            # error at that position (at least the tolerance) can explain
            gap = r.max(-1).values - r.gather(-1, i.unsqueeze(-1)).squeeze(-1)
            allowed = 2 * d.max(-1).values.clamp(min=tol)
            n, bad = int((ri != i).sum()), gap > allowed
            if bool(bad.any()):
                return False, (f"scale {si}: {n} greedy tokens differ (reference margin {float(gap[bad].max()):.3g}"
                               f" > {float(allowed[bad].max()):.3g} explained by the logit error)")
            return True, f"max |dlogit| {worst:.2g}; {n} near-tie token(s) at scale {si}, sequences part there"
    return True, f"tokens equal, max |dlogit| {worst:.2g} (tolerance {tol:.2g})"


def engine_output(model, **kw) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    seen = []
    eng = Engine(model, **kw)
    _, idx = eng.generate(len(LABELS), torch.tensor(LABELS), g_seed=0, cfg=CFG, top_k=1, return_idx=True,
                          logits_hook=lambda si, lg: seen.append(lg.float().cpu()), decode=False)
    return idx, seen


def _grouped_available(dtype, device) -> str | None:
    """None when the grouped-GEMM dispatch runs here, else the reason it does not."""
    if not grouped_mm_ok(dtype, 64):
        return f"torch._grouped_mm missing in torch {torch.__version__} (or no {dtype} support)"
    if not _grouped_mm_runs(dtype, torch.device(device)):
        return f"torch._grouped_mm has no {str(dtype).replace('torch.', '')} kernel on {device}"
    return None


def plan(device: str) -> list[tuple[str, str, dict, str | None]]:
    """(name, model 'dense'|'activated', Engine kwargs, skip reason or None) for every path."""
    cuda = device == "cuda"
    no_cuda = None if cuda else ("no CUDA device" if not torch.cuda.is_available() else "--device cpu")
    f32, bf16 = torch.float32, torch.bfloat16
    rows = [("cpu fp32 dense", "dense", dict(device="cpu", dtype=f32), None),
            ("cpu fp32 activated, segment loop", "activated", dict(device="cpu", dtype=f32, dispatch="segments"), None),
            ("cpu fp32 activated, grouped GEMM", "activated", dict(device="cpu", dtype=f32, dispatch="grouped"),
             _grouped_available(f32, "cpu")),
            ("cpu bf16 dense", "dense", dict(device="cpu", dtype=bf16), None),
            ("cpu bf16 activated", "activated", dict(device="cpu", dtype=bf16), None)]
    g = dict(device="cuda", dtype=bf16)
    rows += [("cuda bf16 dense", "dense", g, no_cuda),
             ("cuda bf16 activated, segment loop", "activated", {**g, "dispatch": "segments"}, no_cuda),
             ("cuda bf16 activated, grouped GEMM", "activated", {**g, "dispatch": "grouped"},
              no_cuda or _grouped_available(bf16, "cuda")),
             ("cuda graphs dense", "dense", {**g, "cuda_graphs": True}, no_cuda),
             ("cuda graphs activated, grouped GEMM", "activated", {**g, "dispatch": "grouped", "cuda_graphs": True},
              no_cuda or _grouped_available(bf16, "cuda")),
             ("torch.compile dense", "dense", {**g, "compile": True}, no_cuda)]
    return rows


def resolve_device(device: str) -> str:
    """auto | cpu | cuda -> cpu or cuda; a bad or unavailable device is one line."""
    if device not in ("auto", "cpu", "cuda"):
        raise VarcompressError(f"--device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VarcompressError("--device cuda: CUDA is not available")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def selftest(device: str = "auto", report=None) -> list[Row]:
    """Run every path (`report(row)` is called as each finishes); returns the rows."""
    device = resolve_device(device)
    models = dict(zip(("dense", "activated"), tiny_models()))
    refs = {k: eager_reference(m) for k, m in models.items()}
    rows = []
    for name, which, kw, skip in plan(device):
        t0 = time.perf_counter()
        if skip is not None:
            row = Row(name, "skipped", skip)
        else:
            try:
                ok, detail = compare(refs[which], engine_output(models[which], **kw), kw["dtype"],
                                     discrete=which == "activated")
                row = Row(name, "passed" if ok else "failed", detail)
            except Exception as e:  # noqa: BLE001 - a path that crashes is a failed row, not a crashed selftest
                row = Row(name, "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}")
        row.seconds = time.perf_counter() - t0
        rows.append(row)
        if report is not None:
            report(row)
    rows.append(ddp_row(device, refs["dense"], report))
    return rows


def ddp_row(device: str, ref, report=None, world: int | None = None) -> Row:
    """Greedy generation sharded over every GPU (one process each, NCCL), as `generate` under torchrun."""
    t0 = time.perf_counter()
    n = torch.cuda.device_count() if device == "cuda" else 0
    world = world or n
    if world < 2:
        row = Row("DDP (one process per device)", "skipped",
                  f"needs 2 or more CUDA devices (found {n})" if device == "cuda" or n else "no CUDA devices")
    else:
        kind = "cuda" if device == "cuda" else "cpu"
        with tempfile.TemporaryDirectory() as d:
            ctx = mp.get_context("spawn")
            q = ctx.SimpleQueue()
            try:
                mp.spawn(_ddp_worker, args=(world, kind, os.path.join(d, "rdv"), q), nprocs=world, join=True)
                ok, detail = q.get()
            except Exception as e:  # noqa: BLE001 - a rank that dies is a failed row
                ok, detail = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160] if str(e).strip() else ''}"
        row = Row(f"DDP ({world} processes, {kind})", "passed" if ok else "failed", detail)
    row.seconds = time.perf_counter() - t0
    if report is not None:
        report(row)
    return row


def _ddp_worker(rank: int, world: int, kind: str, rdv: str, q) -> None:
    """Rank r generates LABELS[r::world] on its device; rank 0 checks the gathered tokens."""
    backend = "nccl" if kind == "cuda" else "gloo"
    dev = torch.device(f"cuda:{rank}") if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(dev)
    tdist.init_process_group(backend, init_method=f"file://{rdv}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        var, _ = tiny_models()
        ref = eager_reference(var)
        mine = list(range(rank, len(LABELS), world))
        eng = Engine(var, device=dev, dtype=torch.bfloat16 if kind == "cuda" else torch.float32)
        seen = []
        _, idx = eng.generate(len(mine), torch.tensor([LABELS[i] for i in mine]), g_seed=0, cfg=CFG, top_k=1,
                              return_idx=True, logits_hook=lambda si, lg: seen.append(lg.float().cpu()),
                              decode=False)
        got = [None] * world
        tdist.all_gather_object(got, (mine, [t.cpu() for t in idx], seen))
        if rank == 0:
            idx_all, lg_all = _merge(got, len(ref[0]))  # rank order; perm puts samples back in label order
            perm = torch.tensor([sum((m for m, _, _ in got), []).index(i) for i in range(len(LABELS))])
            q.put(compare(ref, ([t[perm] for t in idx_all], [t[perm] for t in lg_all]), eng.dtype))
    finally:
        tdist.destroy_process_group()


def _merge(got, S: int):
    idx = [torch.cat([g[1][s] for g in got]) for s in range(S)]
    lg = [torch.cat([g[2][s] for g in got]) for s in range(S)]
    return idx, lg


def format_row(row: Row) -> str:
    return f"{row.path:<38} {row.status:<8} {row.seconds:6.1f}s  {row.detail}"


__all__ = ["DISCRETE_SHARE", "Row", "TOLERANCE", "compare", "ddp_row", "eager_reference", "format_row", "plan", "resolve_device", "selftest",
           "tiny_models"]
