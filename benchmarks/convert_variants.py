"""Compare `varcompress convert` variants on a teacher (run it on the trained testbed teacher).

    python benchmarks/convert_variants.py --testbed shapes --preset components tokens routing budget
    python benchmarks/convert_variants.py --var var_d16.pth --vae vae_ch160v4096z32.pth --preset budget

Prints one line per variant (FLOPs fraction, teacher-forced KL and top-1 agreement on
held-out samples, greedy-generation token agreement and image MSE) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from varcompress.convert.variants import PRESETS, compare_variants, preset_variants
from varcompress.durable import atomic_write


def load_teacher(args):
    if args.testbed:
        from varcompress.testbed.teachers import load_teacher as lt
        return lt(args.testbed, args.root)[0]
    from varcompress import load_vae, load_var
    return load_var(args.var, vae=load_vae(args.vae) if args.vae else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--testbed", help="testbed teacher name (shapes, digits)")
    src.add_argument("--var", help="official-format VAR checkpoint")
    p.add_argument("--vae", help="VQVAE checkpoint (with --var)")
    p.add_argument("--root", type=Path, default=None, help="folder of testbed teachers")
    p.add_argument("--preset", nargs="+", default=["components"], choices=sorted(PRESETS))
    p.add_argument("--only", nargs="+", default=None, help="run only these variant names")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--calib", type=int, default=32, help="calibration samples")
    p.add_argument("--heldout", type=int, default=16, help="held-out evaluation samples")
    p.add_argument("--gen", type=int, default=8, help="images generated per variant for agreement (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="base seed of the calibration and held-out draws")
    p.add_argument("--out", type=Path, default=Path("convert_variants.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_teacher(args).to(args.device)
    if teacher.vae is not None:
        teacher.vae.to(args.device)
    g = torch.Generator().manual_seed(1)
    gen_labels = torch.randint(0, teacher.num_classes, (args.gen,), generator=g).tolist() if args.gen else None
    results = {}
    for name in args.preset:
        print(f"== {name}")
        variants = preset_variants(name, experts=args.experts)
        if args.only:
            variants = {k: v for k, v in variants.items() if k in args.only}
        results[name] = compare_variants(teacher, variants,
                                         gen_labels=gen_labels, calib_samples=args.calib,
                                         heldout_samples=args.heldout, seed=args.seed)
    text = json.dumps(results, indent=1)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
