"""`varcompress convert`: dense VAR -> activated VAR (FFN experts + gated token selection).

Public API (the CLI wires these):
    ConvertConfig, convert(var, cfg, calib=None) -> ActivatedVAR,
    convert_checkpoint(spec, out, vae, **options) -> (dense, ActivatedVAR, out): what the CLI verb does,
    save_activated(model, out_dir, source_sha256=None, force=False), load_activated(dir, vae=None),
    find_ffns(model) -> list[FFNSite], ActivatedVAR (.flops(), .budget(), .record_work()),
    compare_variants(teacher, {name: ConvertConfig}) (benchmarks/convert_variants.py).
"""
from ..activated.config import ConvertConfig
from ..activated.fx_pass import FFNSite, find_ffns
from ..activated.model import ActivatedVAR
from ..formats.activated import load_activated, read_activated_config, save_activated
from .api import convert, convert_checkpoint
from .variants import compare_variants

__all__ = ["ActivatedVAR", "ConvertConfig", "FFNSite", "compare_variants", "convert", "convert_checkpoint", "find_ffns",
           "load_activated", "read_activated_config", "save_activated"]
