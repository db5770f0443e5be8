"""Engine: fast class-conditional generation for dense and activated VAR models.

    eng = Engine(var, dtype=None, device=None, compile=False, cuda_graphs=False)
    img = eng.generate(B, labels, g_seed, cfg=1.5, top_k=900, top_p=0.96)

Same protocol as `VAR.autoregressive_infer_cfg` (rows [labels; unconditional], guidance
t = cfg * si / (S-1), the official next-scale input, images in [0, 1]); faster by:
weights prepared once (fused qkv bias; the adaLN modulations of every block computed
once per generation instead of at every scale), a preallocated K/V cache with static shapes per scale, the top-k-first
sampler (`sampler.py`), the fast decoder (`decode.py`), glibc malloc tuning on CPU,
and optionally torch.compile of each scale's transformer pass and CUDA graphs.
The random stream differs from the eager path (the sampler draws among k survivors),
so only greedy decoding (top_k=1) reproduces its tokens.
"""
from __future__ import annotations

import copy
import time

import torch

from ..errors import VarcompressError
from .cpu import cpu_supports_bf16, tuned_malloc
from .decode import FastDecoder
from .dense import Prepared
from .graphs import ScaleGraphs
from .runners import make_runners
from .sampler import sample_top_k_top_p_fast

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PARTS = ("transformer", "sampling", "next_input", "decode")


class Engine:
    def __init__(self, var, dtype: torch.dtype | None = None, device=None, compile: bool = False,
                 compile_mode: str = "default", cuda_graphs: bool = False, decode_dtype=None,
                 decode_channels_last: bool | None = None, malloc_tuning: bool = True, dispatch: str = "auto"):
        dev = torch.device(device) if device is not None else var.pos_1LC.device
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise VarcompressError("engine: device cuda requested but CUDA is not available")
        if cuda_graphs and dev.type != "cuda":
            raise VarcompressError(f"engine: cuda_graphs=True needs a CUDA device (got {dev.type})")
        if compile_mode not in COMPILE_MODES:
            raise VarcompressError(f"engine: compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                                   f"got {compile_mode!r}")
        if cuda_graphs and compile and compile_mode in ("reduce-overhead", "max-autotune"):
            raise VarcompressError(f"engine: compile_mode={compile_mode!r} captures CUDA graphs itself; use "
                                   "cuda_graphs=False or compile_mode='max-autotune-no-cudagraphs'")
        if dtype is None:
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise VarcompressError(f"engine: dtype must be float32, bfloat16 or float16, got {dtype}")
        if dtype == torch.float16 and dev.type == "cpu":
            raise VarcompressError("engine: float16 is not supported on CPU (use bfloat16 or float32)")
        if var.vae is None:
            raise VarcompressError("generation needs a VQVAE: load_var(path, vae=load_vae(...))")
        if not hasattr(var, "blocks"):  # e.g. prune's scale split: two models, driven by cfg_generate
            raise VarcompressError(f"engine: a {type(var).__name__} has no single block stack; use the model's "
                                   "autoregressive_infer_cfg")
        self.var, self.device, self.dtype = var, dev, dtype
        self.bf16_native = dev.type == "cuda" or cpu_supports_bf16()
        with torch.no_grad():
            self.runners = make_runners(var, dtype, dev, dispatch)
            self.P = Prepared(var, dtype, dev)
        if cuda_graphs and not all(r.graph_safe for r in self.runners):
            raise VarcompressError("engine: cuda_graphs=True needs sync-free expert dispatch (top-k routing with "
                                   "dispatch='grouped', i.e. torch._grouped_mm for this dtype on this GPU)")
        self.quant = copy.deepcopy(var.vae.quantize).to(dev).eval()
        self.patch_nums, self.SN = tuple(var.patch_nums), len(var.patch_nums)
        self.begin_ends, self.first_l = var.begin_ends, var.first_l
        self.num_classes, self.Cvae = var.num_classes, var.Cvae
        if decode_dtype is None:
            decode_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        if decode_channels_last is None:  # measured (docs/PERFORMANCE.md): helps bf16 on CPU, not fp32
            decode_channels_last = dev.type == "cpu" and decode_dtype == torch.bfloat16
        self.decoder = FastDecoder(var.vae, decode_dtype, dev, channels_last=decode_channels_last)
        self.malloc_tuning = malloc_tuning and dev.type == "cpu"
        self.compile, self.compile_mode, self.cuda_graphs = compile, compile_mode, cuda_graphs
        self._fwd = self._scale_forward
        if compile:
            import torch._dynamo as dynamo  # lazy on purpose: heavy, needed only with compile

            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(dynamo.config, name):
                    setattr(dynamo.config, name, max(getattr(dynamo.config, name), 8 * self.SN))
            self._fwd = torch.compile(self._scale_forward, mode=None if compile_mode == "default" else compile_mode,
                                      dynamic=False)
        self._states: dict[int, dict] = {}
        self.profile = False
        self.last_timings: dict[str, float] = {}      # wall seconds per part of the last generate
        self.last_cpu_timings: dict[str, float] = {}  # process CPU seconds (robust under contention)

    # ---- per-batch-size state: K/V buffers, modulation buffer, graphs ------------------------
    def _state(self, B: int) -> dict:
        st = self._states.get(B)
        if st is None:
            rows, P = 2 * B, self.P
            hd = P.C // P.heads
            kv = [(torch.empty(rows, P.heads, r.kv_len, hd, dtype=self.dtype, device=self.device),
                   torch.empty(rows, P.heads, r.kv_len, hd, dtype=self.dtype, device=self.device))
                  for r in self.runners]
            blocks = [r.state_buffers(rows, P.C, self.dtype, self.device) if self.cuda_graphs else {}
                      for r in self.runners]
            st = {"kv": kv, "blocks": blocks, "graphs": None, "mods": None}
            if self.cuda_graphs:
                st["graphs"] = ScaleGraphs(self._fwd_static, self.device)
            self._states = {B: st}  # keep one batch size (buffers can be large)
        return st

    def _scale_forward(self, si: int, x: torch.Tensor, mods, head_mod, kv, blocks) -> torch.Tensor:
        """All blocks on one scale's rows, then the float32 head: (2B, n, C) -> (2B, n, V)."""
        for b, runner in enumerate(self.runners):
            x = runner(x, mods[b], kv[b][0], kv[b][1], si, blocks[b])
        return self.P.logits(x, head_mod)

    def _fwd_static(self, si: int, st: dict, x: torch.Tensor) -> torch.Tensor:
        return self._fwd(si, x, st["mods"][0], st["mods"][1], st["kv"], st["blocks"])

    # ---- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, B: int, labels=None, g_seed: int | None = None, cfg: float = 1.5, top_k: int = 0,
                 top_p: float = 0.0, return_idx: bool = False, logits_hook=None, decode: bool = True):
        """B images in [0, 1] (B, 3, H, W) float32; with return_idx also the token indices per scale.

        `logits_hook(si, logits)` sees the guided float32 logits (B, n, V) of every scale.
        `decode=False` skips the decoder (the image is None): for callers that need only tokens.
        """
        with tuned_malloc(self.malloc_tuning):
            return self._generate(B, labels, g_seed, cfg, top_k, top_p, return_idx, logits_hook, decode)

    def _generate(self, B, labels, g_seed, cfg, top_k, top_p, return_idx, logits_hook, decode=True):
        if B < 1:
            raise VarcompressError(f"batch size must be >= 1, got {B}")
        dev, P = self.device, self.P
        rng = None
        if g_seed is not None:
            rng = torch.Generator(device=dev)
            rng.manual_seed(g_seed)
        label_B = self.var._labels(B, labels, rng, dev)
        if label_B.numel() and (label_B.min() < 0 or label_B.max() > self.num_classes):
            raise VarcompressError(f"labels must be in [0, {self.num_classes}], got {label_B.tolist()}")
        st = self._state(B)
        tm, tm_cpu = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0.0)
        clock = self._clock(tm, tm_cpu)
        cond = P.class_emb[torch.cat((label_B, torch.full_like(label_B, self.num_classes)))]
        mods = P.modulations(cond)
        if self.cuda_graphs:
            st["graphs"].set_inputs(mods)
            mods = st["graphs"].mods
        st["mods"] = mods
        x = (cond.unsqueeze(1).expand(2 * B, self.first_l, -1) + P.pos_start.expand(2 * B, self.first_l, -1)
             + P.lvl_pos[:, :self.first_l])
        pn_last = self.patch_nums[-1]
        f_hat = torch.zeros(B, self.Cvae, pn_last, pn_last, device=dev)
        idx_list = []
        clock(None)
        for si, pn in enumerate(self.patch_nums):
            if self.cuda_graphs:
                logits = st["graphs"].run(si, st, x)
            else:
                logits = self._fwd(si, x, mods[0], mods[1], st["kv"], st["blocks"])
            clock("transformer")
            t = cfg * si / (self.SN - 1)
            logits = (1 + t) * logits[:B] - t * logits[B:]
            if logits_hook is not None:
                logits_hook(si, logits)
            idx = sample_top_k_top_p_fast(logits, top_k, top_p, rng)
            idx_list.append(idx)
            clock("sampling")
            h = self.quant.embedding(idx).transpose(1, 2).reshape(B, self.Cvae, pn, pn)
            f_hat, nxt = self.quant.get_next_autoregressive_input(si, self.SN, f_hat, h)
            if si != self.SN - 1:
                bg, ed = self.begin_ends[si + 1]
                nxt = nxt.view(B, self.Cvae, -1).transpose(1, 2).to(self.dtype)
                x = (torch.nn.functional.linear(nxt, P.word_w, P.word_b) + P.lvl_pos[:, bg:ed]).repeat(2, 1, 1)
            clock("next_input")
        img = self.decoder(f_hat) if decode else None
        clock("decode")
        st["mods"] = None
        self.last_timings = tm if self.profile else {}
        self.last_cpu_timings = tm_cpu if self.profile else {}
        return (img, idx_list) if return_idx else img

    def _clock(self, tm: dict, tm_cpu: dict):
        """Adds the wall / process-CPU time since the last call to tm[part] / tm_cpu[part] when
        self.profile (after a device sync on GPU)."""
        last = [time.perf_counter(), time.process_time()]

        def tick(part):
            if not self.profile:
                return
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = [time.perf_counter(), time.process_time()]
            if part is not None:
                tm[part] += now[0] - last[0]
                tm_cpu[part] += now[1] - last[1]
            last[:] = now
        return tick
