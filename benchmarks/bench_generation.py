"""Generation benchmark: eager reference vs the varcompress engine vs activated models (fresh processes).

    python benchmarks/bench_generation.py --model small --model shapes --model digits --batch 1 --batch 4 \
        --budget k4 --budget k4-keep0.7 --budget k2-keep0.5 --repeats 5 --warmup 1 --decode --stem cpu_small
    python benchmarks/bench_generation.py --model d16 --batch 1 --repeats 3 --budget k4-keep0.7 --stem cpu_d16_b1
    python benchmarks/bench_generation.py --device cuda --model d16 --batch 1 --batch 16 --batch 64 \
        --budget k4 --budget k4-keep0.7 --budget k2-keep0.5 --warmup 2 --repeats 5 --stem gpu_d16

Same options as `varcompress bench` (this script calls it; `--same-process` for the old interleaved
mode, needed by `--decode`); results go to benchmarks/results/.
"""
from __future__ import annotations

import sys

from varcompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
