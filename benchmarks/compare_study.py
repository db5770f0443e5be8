"""One budget of the comparison study, in one command: student(s), every baseline, one table.

    python benchmarks/compare_study.py recipes/testbed_digits.yaml --flops-target 0.6 --out runs/study60
    python benchmarks/compare_study.py RECIPE --flops-target 0.75 --out runs/study75 --tokens --tokens-only --dry-run

Steps (each a `varcompress` command, printed before it runs; finished steps are skipped,
so a re-run resumes):
1. `distill` the recipe at the budget (experts only, as shipped); with `--tokens` also a
   dual student that skips tokens (learned selector, prev-scale fill, last 3 scales; keep
   ratios per scale, or per block and scale with `--keep-granularity block`); with
   `--tokens-only` a student that skips tokens the same way but keeps its FFN dense
   (one always-on expert): the three students differ only in where the saving comes from;
2. `prune` every baseline at the experts-only student's FLOPs (`--match student_init`; the
   token student's where experts alone cannot reach the budget),
   fine-tuned with the recipe's budget (`--finetune`: same data, seeds, steps, groups), and
   the FastVAR-style model once more without fine-tuning (training-free row). A baseline
   that cannot reach the budget (the scale split at large savings) is reported and left out;
3. `compare` all rows (3 sampling seeds, fresh-process latency at batch 1 and 16).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from varcompress.cli import main as cli
from varcompress.resolve import TESTBED_NAMES

METHODS = ("magnitude", "wanda", "residual-tokens", "both", "fastvar", "fastvar-wanda", "split")
TOKENS = {"sparse_scales": 3, "selector": "learned", "reconstruction": "prev_scale"}


def step(args: list[str], dry: bool, done: Path | None = None, may_fail: bool = False) -> bool:
    """Run one CLI command (skipped when `done` exists); False if it failed and may_fail."""
    print("$ varcompress " + " ".join(shlex.quote(a) for a in args), flush=True)
    if dry or (done is not None and done.exists()):
        return True
    rc = cli(args)
    if rc != 0 and not may_fail:
        sys.exit(rc)
    return rc == 0


def recipe_for(src: Path, target: float, out: Path, tokens: bool, granularity: str = "scale",
               dense_ffn: bool = False) -> dict:
    r = yaml.safe_load(src.read_text())
    r["student"]["convert"]["flops_target"] = target
    if tokens:
        r["student"]["convert"].update(TOKENS, keep_granularity=granularity)
        r["stages"][0]["train"] = sorted(set(r["stages"][0]["train"]) | {"selectors"})
    if dense_ffn:  # one always-on expert: the dense FFN, no router (its stage group stays empty)
        r["student"]["convert"].update(experts=1, compensation=False)
    r["run"]["out_dir"] = str(out)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", type=Path, help="distill recipe of the teacher (its budget is every row's budget)")
    p.add_argument("--flops-target", type=float, required=True, help="fraction of the teacher's FLOPs, e.g. 0.6")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", action="store_true", help="also a dual student that skips tokens")
    p.add_argument("--tokens-only", action="store_true",
                   help="also a student that skips tokens with a dense FFN (no experts)")
    p.add_argument("--keep-granularity", choices=("scale", "block"), default="scale",
                   help="the token student's keep ratios: per scale, or per block and scale")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args()
    out, dry = a.out, a.dry_run
    t = yaml.safe_load(a.recipe.read_text())["teacher"]
    teacher = str(t["checkpoint"])
    where = ["--dataset", teacher] if teacher in TESTBED_NAMES else \
        ["--teacher", teacher] + (["--vae", str(t["vae"])] if t.get("vae") else [])
    out.mkdir(parents=True, exist_ok=True)
    students = {"act": False} | ({"act_tokens": True} if a.tokens else {}) | \
        ({"tokens_only": True} if a.tokens_only else {})
    reached = {}
    for name, tok in students.items():
        rp = out / f"{name}.yaml"
        rp.write_text(yaml.safe_dump(recipe_for(a.recipe, a.flops_target, out / name, tok, a.keep_granularity,
                                                dense_ffn=name == "tokens_only"), sort_keys=False))
        # experts alone may not reach a deep budget (scenes: at most ~39% fewer); the token student then leads
        reached[name] = step(["distill", str(rp)], dry, out / name / "result.json", may_fail=a.tokens and not tok)
    lead = "act" if reached["act"] else "act_tokens"
    if lead != "act":
        print(f"# act (experts only): cannot reach {a.flops_target}; baselines match act_tokens", flush=True)
    recipe, match = str(out / f"{lead}.yaml"), str(out / lead / "student_init")
    rows = [f"act converted={match}", f"act distilled={out / 'act'}"] if reached["act"] else []
    if a.tokens:
        rows += [f"act+tokens converted={out / 'act_tokens' / 'student_init'}",
                 f"act+tokens distilled={out / 'act_tokens'}"]
    if a.tokens_only:
        rows += [f"tokens only converted={out / 'tokens_only' / 'student_init'}",
                 f"tokens only distilled={out / 'tokens_only'}"]
    for m in a.methods:
        for ft in (True, False) if m == "fastvar" else (True,):
            d = out / f"{m}{'_ft' if ft else ''}"
            args = ["prune", teacher, "--method", m, "--match", match, "--out", str(d), "--threads", str(a.threads)]
            args += ["--vae", str(t["vae"])] if t.get("vae") and teacher not in TESTBED_NAMES else []
            if step(args + (["--finetune", recipe] if ft else []), dry, d / "prune.json", may_fail=True):
                rows.append(f"{m}{' + ft' if ft else ' (training-free)'}={d}")
            else:
                print(f"# {m}: cannot reach {a.flops_target} (see the line above); left out", flush=True)
    step(["compare", *rows, *where, "--out", str(out / "compare"), "--threads", str(a.threads), "--force"], dry)


if __name__ == "__main__":
    main()
