"""The final result.json: teacher vs converted (undistilled) vs distilled, one protocol for all.

Teacher-relative metrics (KL / top-1 on teacher-drawn maps, same-seed agreement) always;
testbed metrics (class accuracy, testbed FID, precision/recall via the shipped
classifier) when the teacher is a testbed teacher; transformer FLOPs from `budget()`.
"""
from __future__ import annotations

import time

from ..evaluate import EvalProtocol, teacher_metrics, testbed_metrics
from ..flops import var_flops
from ..formats.activated import load_activated


def protocol(r: dict) -> EvalProtocol:
    e = r["eval"]
    sampling = {k: r["data"][k] for k in ("cfg", "top_k", "top_p")}
    return EvalProtocol(n_per_class=e["n_per_class"], seed=e["seed"], sampling=sampling,
                        teacher_maps=e["teacher_maps"], same_seed=e["same_seed"])


def _flops(model) -> dict:
    b = model.budget()
    return {"transformer_gflops": b["transformer_gflops"], "fraction": b["fraction"],
            "reduction": 1 - b["fraction"], "top_k": b["top_k"], "keep_counts": b["keep_counts"]}


def final_report(ctx, t, summary: dict) -> dict:
    r, proto = ctx.recipe, protocol(ctx.recipe)
    testbed = t.dataset is not None and r["eval"]["testbed"]
    models = {"distilled": ctx.student}
    if r["eval"]["converted"]:
        init = ctx.out / "student_init" if r["student"]["from"] is None else r["student"]["from"]
        models["converted"] = load_activated(init, vae=t.vae).to(ctx.dist.device)
    dense = var_flops(t.var.cfg).transformer
    res = {"teacher": {"checkpoint": r["teacher"]["checkpoint"], "sha256": t.sha256, "dataset": t.dataset,
                       "transformer_gflops": dense},
           "models": {}, "protocol": proto.to_dict(), "train": summary, "recipe_hash": ctx.recipe_hash}
    if testbed and r["eval"]["teacher"]:
        t0 = time.time()
        res["models"]["teacher"] = {"testbed": testbed_metrics(t.var, t.dataset, proto)[0],
                                    "flops": {"transformer_gflops": dense, "fraction": 1.0, "reduction": 0.0}}
        res["models"]["teacher"]["eval_seconds"] = round(time.time() - t0, 1)
    for name, m in models.items():
        t0 = time.time()
        m.eval()
        entry = {"flops": _flops(m), "teacher_relative": teacher_metrics(m, t.var, proto)}
        if testbed:
            entry["testbed"] = testbed_metrics(m, t.dataset, proto)[0]
        entry["eval_seconds"] = round(time.time() - t0, 1)
        res["models"][name] = entry
    res["flops_reduction"] = res["models"]["distilled"]["flops"]["reduction"]
    res["recipe"] = r
    return res
