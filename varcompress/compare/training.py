"""What trained each compared model: groups, steps and seeds per row, training-free rows marked.

Why: a comparison is only fair if every fine-tuned row had the same budget, so the table
states it instead of asserting it. Sources: a pruned directory's `prune.json` (its
fine-tuning summary, or none: training-free), a distill run's `recipe.resolved.yaml`
(the student's stages), an activated directory outside a finished run (converted and
calibrated only: training-free).
"""
from __future__ import annotations

from pathlib import Path

from ..distill.recipe import read_yaml_file
from ..loading import model_dir

FREE = {"free": True, "stages": [], "steps": 0, "seeds": None, "summary": "training-free"}


def _summary(stages: list[dict], seeds: dict) -> str:
    parts = [f"{s['name']}: {', '.join(s['groups'])} x{s['steps']}" for s in stages]
    return f"{' + '.join(parts)} (seeds run {seeds['run']}, data {seeds['data']})"


def _from_recipe(path: Path) -> dict:
    r = read_yaml_file(path)
    stages = [{"name": s.get("name", f"stage{i}"), "groups": list(s["train"]), "steps": int(s["steps"])}
              for i, s in enumerate(r["stages"])]
    seeds = {"run": r["run"]["seed"], "data": r["data"].get("seed", r["run"]["seed"])}
    return {"free": False, "stages": stages, "steps": sum(s["steps"] for s in stages), "seeds": seeds,
            "summary": _summary(stages, seeds)}


def training_info(spec: str, kind: str, info: dict) -> dict:
    """{free, stages [{name, groups, steps}], steps, seeds {run, data}, summary} for one row."""
    if kind == "teacher":
        return {**FREE, "free": None, "summary": "teacher (reference)"}
    if kind == "pruned":
        ft = info.get("finetune")
        if not ft:
            return dict(FREE)
        b = ft.get("budget", {})
        seeds = ft.get("seeds") or {"run": b.get("seed"), "data": (b.get("data") or {}).get("seed")}
        trained = ft.get("trained")
        groups = trained if isinstance(trained, list) else [str(trained)]
        stages = [{"name": "finetune", "groups": groups, "steps": int(ft["steps"])}]
        return {"free": False, "stages": stages, "steps": int(ft["steps"]), "seeds": seeds,
                "summary": _summary(stages, seeds)}
    p = Path(spec)
    run = p if model_dir(p) != p else p.parent if p.name == "student" else None
    if run is not None and (run / "recipe.resolved.yaml").is_file():
        return _from_recipe(run / "recipe.resolved.yaml")
    if kind == "activated":
        return dict(FREE)
    return {**FREE, "free": None, "summary": "unknown (no training record)"}
