"""Does refitting a distilled student's compensation means on its own activations help?

    python benchmarks/recalibrate_student.py runs/testbed_digits --teacher digits --seeds 0 1 2

For each seed: teacher-drawn maps for the refit (stream "calibration") and held-out maps
(stream "held_out", disjoint by construction), KL / top-1 to the teacher on the held-out
maps before and after `activated.recalibrate.recalibrate`. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from varcompress.activated.recalibrate import recalibrate
from varcompress.convert.calibrate import calibration_data, with_uncond
from varcompress.convert.variants import evaluate
from varcompress.durable import atomic_write
from varcompress.resolve import resolve_model
from varcompress.streams import derive_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished distill run (or any activated model directory)")
    p.add_argument("--teacher", required=True, help="the dense teacher: testbed name or .pth")
    p.add_argument("--maps", type=int, default=32, help="teacher maps for the refit")
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("recalibrate_student.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    teacher = resolve_model(a.teacher).var
    rows = []
    for seed in a.seeds:
        student = resolve_model(a.run).var
        labels, x = calibration_data(teacher, a.maps, derive_seed(seed, "calibration"))
        hl, hx = with_uncond(teacher, *calibration_data(teacher, a.heldout, derive_seed(seed, "held_out")))
        with torch.no_grad():
            t_logits = torch.cat([teacher(hl[i:i + 8], hx[i:i + 8]) for i in range(0, hl.shape[0], 8)])
        before = evaluate(student, teacher, hl, hx, t_logits)
        moved = recalibrate(student, labels, x, compensation=True, seed=seed)
        after = evaluate(student, teacher, hl, hx, t_logits)
        rows.append({"seed": seed, "kl_before": before["kl"], "kl_after": after["kl"],
                     "top1_before": before["top1_agree"], "top1_after": after["top1_agree"],
                     "flops_before": before["flops_fraction"], "flops_after": after["flops_fraction"], **moved})
        r = rows[-1]
        print(f"seed {seed}: KL {r['kl_before']:.4f} -> {r['kl_after']:.4f}  top-1 {r['top1_before']:.4f} -> "
              f"{r['top1_after']:.4f}  means moved {r['compensation_change']:.3f}", flush=True)
    if len(rows) > 1:
        d = [r["kl_after"] - r["kl_before"] for r in rows]
        print(f"KL change: mean {statistics.mean(d):+.4f}, std {statistics.stdev(d):.4f} over {len(d)} seeds")
    atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps({"run": str(a.run), "rows": rows}, indent=1)))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
