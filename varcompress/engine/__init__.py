"""Fast generation engine: dense and activated VAR models, CPU and GPU.

    from varcompress.engine import Engine
    img = Engine(var).generate(B, labels, g_seed=0, cfg=1.5, top_k=900, top_p=0.96)

See docs/PERFORMANCE.md for the design and the measurements.
"""
from .decode import FastDecoder
from .engine import COMPILE_MODES, Engine
from .sampler import filtered_probs, sample_top_k_top_p_fast, top_k_top_p_survivors

__all__ = ["COMPILE_MODES", "Engine", "FastDecoder", "filtered_probs", "sample_top_k_top_p_fast",
           "top_k_top_p_survivors"]
