"""Models and variants the generation benchmark compares (`varcompress bench`).

Models: "d16" (official full size, random weights, with a random full-size VQVAE),
"shapes"/"digits" (the testbed teachers, skipped when absent), "small" (the testbed
architecture with random weights). For each: the eager reference, the engine (fp32 and,
where the hardware has native bf16 or a GPU, bf16), and activated models converted at
several budgets, run by the engine and by their own eager generation.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..activated.config import ConvertConfig
from ..convert.api import convert
from ..errors import VarcompressError
from ..flops import var_flops
from ..models import var as var_module
from ..models.sampler import OFFICIAL_SAMPLING
from ..models.var import VARConfig
from ..models.vqvae import VQVAE, VQVAEConfig
from ..resolve import TESTBED_NAMES, resolve_model
from ..testbed.teachers import load_teacher, teacher_spec
from ..vae_io import build_vae
from ..var_io import build_var
from .decode import FastDecoder
from .engine import Engine

# (name, ConvertConfig kwargs): d16 transformer FLOPs fractions ~0.70, ~0.53, ~0.33
MODELS = ("d16", "shapes", "digits", "small")  # what build_model builds
BUDGETS = {"k4": dict(top_k=4, keep_ratio=1.0), "k4-keep0.7": dict(top_k=4, keep_ratio=0.7),
           "k2-keep0.5": dict(top_k=2, keep_ratio=0.5)}


@dataclass
class Variant:
    model: str
    name: str
    run: Callable[[int, list[int]], torch.Tensor]  # (B, labels) -> images
    transformer_gflops: float  # per image, with CFG
    decode_gflops: float
    malloc_tuned: bool = False
    timings: Callable[[], dict] | None = None
    info: dict = field(default_factory=dict)


def build_model(name: str, device: torch.device, seed: int = 0):
    """(var with its VQVAE attached, label) for a benchmark model name."""
    torch.manual_seed(seed)
    if name == "d16":
        var, vae = build_var(VARConfig.official(16)), build_vae(VQVAEConfig())
    elif name in ("shapes", "digits"):
        var, vae = load_teacher(name)
    elif name == "small":
        spec = teacher_spec("shapes")
        var, vae = build_var(spec.var), build_vae(spec.vae)
    else:
        raise VarcompressError(f"bench: unknown model {name!r} ({', '.join(MODELS)})")
    var.attach_vae(vae)
    return var.to(device).eval(), vae.to(device).eval()


def decode_gflops(vae, subpixel: bool = False) -> float:
    """Decoder GFLOPs per image (post_quant_conv + decoder), counted on the meta device; subpixel:
    as the engine's FastDecoder computes it (each upsample conv: 16 instead of 36 multiply-adds per
    input pixel and channel pair)."""
    with torch.device("meta"):
        m = VQVAE(vae.cfg)
    pn = vae.patch_nums[-1]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m.fhat_to_img(torch.empty(1, vae.Cvae, pn, pn, device="meta"))
    saved, res = 0, pn
    for i in reversed(range(1, len(m.decoder.up))):  # input resolution of each upsample, low to high
        conv = m.decoder.up[i].upsample.conv
        saved += 2 * (36 - 16) * res * res * conv.in_channels * conv.out_channels
        res *= 2
    return (fc.get_total_flops() - (saved if subpixel else 0)) / 1e9


def random_calibration(var, n: int, seed: int = 0):
    """A small random calibration set (labels, x_BLCv_wo_first_l) for random-weight models."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, var.num_classes, (n,), generator=g)
    x = torch.randn(n, var.L - var.first_l, var.Cvae, generator=g) * 0.5
    return labels, x


def load_students(model: str, var, specs: list[str], device) -> list[tuple[str, object]]:
    """(label, model) for user models of the testbed teacher `model` (activated / pruned / exported)."""
    if specs and model not in TESTBED_NAMES:
        raise VarcompressError(f"bench: --student needs a testbed --model ({', '.join(TESTBED_NAMES)}), "
                               f"not {model!r}")
    out = []
    for spec in specs:
        m = resolve_model(spec, dataset=model)
        if m.var.cfg.embed_dim != var.cfg.embed_dim or tuple(m.var.patch_nums) != tuple(var.patch_nums):
            raise VarcompressError(f"bench: --student {spec} is not a model of the {model} teacher's shape")
        out.append((m.label, m.var.to(device).eval()))
        m.var.vae.to(device)
    return out


def variants_for(model: str, var, vae, device, budgets: list[str], bf16: bool, calib: int,
                 act_eager: bool = True, eager: bool = True, extras: tuple[str, ...] = (),
                 log=print, students: list[tuple[str, object]] = (), only: str | None = None) -> list[Variant]:
    """extras: "compile" and/or "graphs" add engine variants with torch.compile / CUDA graphs;
    students: (label, model) pairs timed like the budgets (their own eager path and the engine);
    only: build just the variant of that name (a fresh-process worker times one variant)."""
    dec, dec_fast = decode_gflops(vae), decode_gflops(vae, subpixel=True)
    dense = var_flops(var.cfg).transformer
    out = []
    want = lambda name: only is None or name == only  # noqa: E731

    def eager_variant(m, name, gflops, info, autocast: torch.dtype | None = None, malloc: bool = False):
        run, parts = eager_profiled(m, autocast)
        tag = "fp32" if autocast is None else "bf16-autocast"
        return Variant(model, name, run, gflops, dec, malloc, parts, dict(info, dtype=tag))

    def engine_variants(m, prefix, gflops, info):
        dtypes = [torch.float32] + ([torch.bfloat16] if bf16 else [])
        opts = [()] + ([tuple(extras)] if extras else [])
        for dt, opt in [(dt, o) for dt in dtypes for o in opts]:
            graphs, comp = "graphs" in opt, "compile" in opt
            tag = ("fp32" if dt == torch.float32 else "bf16") + "".join(f"+{o}" for o in opt)
            if not want(f"{prefix}engine-{tag}"):
                continue
            eng = Engine(m, dtype=dt, device=device, decode_dtype=dt, cuda_graphs=graphs, compile=comp,
                         compile_mode="max-autotune-no-cudagraphs" if graphs and comp else "default")
            eng.profile = device.type == "cpu"  # free on CPU; on GPU the syncs would cost
            out.append(Variant(model, f"{prefix}engine-{tag}", _engine_run(eng), gflops, dec_fast, True,
                               (lambda e=eng: dict(e.last_timings, **{f"cpu_{k}": v for k, v in
                                                                    e.last_cpu_timings.items()})),
                               dict(info, dtype=tag)))

    if eager:
        if want("eager"):
            out.append(eager_variant(var, "eager", dense, {}))
        if device.type == "cpu" and want("eager+malloc"):  # with the engine's malloc tuning: the allocator's share
            out.append(eager_variant(var, "eager+malloc", dense, {}, malloc=True))
        if bf16 and want("eager-bf16"):  # the official protocol: the eager call under bf16 autocast
            out.append(eager_variant(var, "eager-bf16", dense, {}, torch.bfloat16))
    engine_variants(var, "", dense, {"fraction": 1.0})
    budgets = [b for b in budgets if only is None or only.startswith(f"act[{b}]-")]
    students = [(lb, m) for lb, m in students if only is None or only.startswith(f"{lb}-")]
    if budgets:
        labels, x = random_calibration(var, calib)
        for b in budgets:
            if b not in BUDGETS:
                raise VarcompressError(f"bench: unknown budget {b!r} ({', '.join(BUDGETS)})")
            log(f"[bench] converting {model} at {b} ...")
            kw = dict(BUDGETS[b])
            if "expert_scales" in ConvertConfig.__dataclass_fields__:
                kw["expert_scales"] = None  # route experts at every scale (as in the recorded results)
            act = convert(var, ConvertConfig(experts=8, calib_tokens=4096, router_steps=0, **kw),
                          calib=(labels.to(device), x.to(device)))
            g = act.budget()["transformer_gflops"]
            info = {"fraction": g / dense, "budget": b}
            if act_eager and want(f"act[{b}]-eager"):
                out.append(eager_variant(act, f"act[{b}]-eager", g, info))
            engine_variants(act, f"act[{b}]-", g, info)
    for label, m in students:
        g = m.budget()["transformer_gflops"] if hasattr(m, "budget") else var_flops(m.cfg).transformer
        info = {"fraction": g / dense, "budget": label}
        if act_eager and want(f"{label}-eager"):
            out.append(eager_variant(m, f"{label}-eager", g, info))
        engine_variants(m, f"{label}-", g, info)
    for v in out:
        v.info.setdefault("num_classes", var.num_classes)
    return out


def decode_variants(model: str, vae, device, bf16: bool) -> list[Variant]:
    """The decoder alone on a random f_hat: eager `fhat_to_img` vs FastDecoder layouts and dtypes."""
    dec, dec_fast, pn, cache = decode_gflops(vae), decode_gflops(vae, subpixel=True), vae.patch_nums[-1], {}

    def f_hat(B):
        if B not in cache:
            cache[B] = torch.randn(B, vae.Cvae, pn, pn, generator=torch.Generator().manual_seed(B)).to(device)
        return cache[B]

    def eager(B, labels):
        with torch.no_grad():
            return vae.fhat_to_img(f_hat(B)).add(1).mul(0.5)

    out = [Variant(f"decode:{model}", "eager", eager, 0.0, dec, False),
           Variant(f"decode:{model}", "eager+malloc", eager, 0.0, dec, True)]
    for dt in [torch.float32] + ([torch.bfloat16] if bf16 else []):
        for cl in (False, True):
            fd = FastDecoder(vae, dt, device, channels_last=cl)
            name = f"fast-{'fp32' if dt == torch.float32 else 'bf16'}{'-channels_last' if cl else ''}"
            out.append(Variant(f"decode:{model}", name, (lambda B, labels, fd=fd: fd(f_hat(B))), 0.0, dec_fast, True))
    return out


def eager_profiled(m, autocast: torch.dtype | None = None):
    """(run, timings) for the eager path, timing its sampler, next-scale input and decode calls;
    "transformer" is the rest (blocks, head, guidance, embeddings). autocast: run the whole call
    (decode included) under torch.autocast with that dtype, as the official sampling script does."""
    tm: dict[str, float] = {}

    def timed(part, fn):
        def wrapper(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            out = fn(*a, **k)
            tm[part] += time.perf_counter() - t
            tm["cpu_" + part] += time.process_time() - c
            return out
        return wrapper

    def run(B, labels):
        tm.clear()
        tm.update(dict.fromkeys(("sampling", "next_input", "decode", "cpu_sampling", "cpu_next_input",
                                 "cpu_decode"), 0.0))
        quant, vae, sampler = m.vae.quantize, m.vae, var_module.sample_top_k_top_p
        var_module.sample_top_k_top_p = timed("sampling", sampler)
        quant.get_next_autoregressive_input = timed("next_input", quant.get_next_autoregressive_input)
        vae.fhat_to_img = timed("decode", vae.fhat_to_img)
        t0, c0 = time.perf_counter(), time.process_time()
        dev = next(m.parameters()).device.type
        ctx = torch.autocast(dev, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        try:
            with ctx:
                return m.autoregressive_infer_cfg(B, labels, g_seed=0, **OFFICIAL_SAMPLING)
        finally:
            var_module.sample_top_k_top_p = sampler
            del quant.get_next_autoregressive_input, vae.fhat_to_img  # back to the class methods
            rest = ("sampling", "next_input", "decode")
            tm["transformer"] = time.perf_counter() - t0 - sum(tm[p] for p in rest)
            tm["cpu_transformer"] = time.process_time() - c0 - sum(tm["cpu_" + p] for p in rest)

    return run, (lambda: dict(tm))


def _engine_run(eng):
    return lambda B, labels: eng.generate(B, labels, g_seed=0, **OFFICIAL_SAMPLING)
