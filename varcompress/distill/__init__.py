"""`varcompress distill`: two-stage distillation of an activated VAR from its dense teacher.

Public API:
    distill(recipe, force=False, resume=True, out_dir=None) -> DistillResult
    load_recipe(path, out_dir=None) -> dict   (validated, defaults filled in)
    parse_recipe(dict) -> dict, dump_recipe(dict) -> str, recipe_hash(dict) -> str
    param_groups(student) -> {group: [(name, param)]}
See docs/DISTILL.md.
"""
from .api import DistillResult, distill
from .recipe import dump_recipe, load_recipe, parse_recipe, recipe_hash
from .stages import param_groups

__all__ = ["DistillResult", "distill", "dump_recipe", "load_recipe", "param_groups", "parse_recipe", "recipe_hash"]
