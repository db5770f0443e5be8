"""`varcompress compare`: one table (size, FLOPs, latency, quality) for models that share a teacher.

Public API:
    compare(entries, out, dataset=None, teacher=None, vae_path=None, opts=CompareOptions(), force=False) -> report
    CompareOptions, Entry, parse_spec("label=spec"), load_model(entry, ...), load_compare_recipe(path),
    REPORT_SCHEMA / ROW_SCHEMA (JSON Schema of report.json), validate_report(report).
See docs/COMPARE.md.
"""
from .api import CompareOptions, compare
from .models import Entry, load_model, parse_spec
from .recipe import load_compare_recipe
from .schema import REPORT_SCHEMA, ROW_SCHEMA, SCHEMA_VERSION, validate_report

__all__ = ["REPORT_SCHEMA", "ROW_SCHEMA", "SCHEMA_VERSION", "CompareOptions", "Entry", "compare",
           "load_compare_recipe", "load_model", "parse_spec", "validate_report"]
