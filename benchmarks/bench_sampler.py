"""Sampler benchmark: the reference top-k/top-p sampler vs the engine's two top-p methods.

    python benchmarks/bench_sampler.py --threads 1 --repeats 20 --stem cpu_sampler

Each case is the sampler's input at the last VAR scale (B x tokens rows after guidance).
Prints a Markdown table and writes benchmarks/results/<stem>.json and .md. Process CPU
time per call, median.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from varcompress.durable import atomic_write
from varcompress.engine.cpu import describe_device
from varcompress.engine.sampler import sample_top_k_top_p_fast
from varcompress.models.sampler import sample_top_k_top_p

CASES = [  # (label, rows, vocabulary, logit scale)
    ("digits B=16, last scale", 16 * 64, 512, 3.0),
    ("d16 B=1, last scale", 256, 4096, 1.0),
    ("d16 B=4, last scale, flat logits", 4 * 256, 4096, 0.3),
    ("d16 B=4, last scale, peaked logits", 4 * 256, 4096, 4.0),
]
SAMPLERS = {
    "reference (sort V, multinomial)": lambda x, k, p, g: sample_top_k_top_p(x, k, p, generator=g),
    "sorted survivors + inverse CDF": lambda x, k, p, g: sample_top_k_top_p_fast(x, k, p, g, method="sorted"),
    "rejection (no sort)": lambda x, k, p, g: sample_top_k_top_p_fast(x, k, p, g, method="rejection"),
}


def cpu_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=900)
    ap.add_argument("--top-p", type=float, default=0.96)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--stem", default="cpu_sampler")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for label, n, V, scale in CASES:
        x = torch.randn(1, n, V, generator=torch.Generator().manual_seed(n + V)) * scale
        g = torch.Generator().manual_seed(0)
        row = {"case": label, "rows": n, "vocab": V, "logit_scale": scale}
        row["ms"] = {name: cpu_ms(lambda f=f: f(x, a.top_k, a.top_p, g), a.repeats) for name, f in SAMPLERS.items()}
        rows.append(row)
    names = list(SAMPLERS)
    md = [f"Device: {describe_device(torch.device('cpu'))['name']} (threads={a.threads}); torch {torch.__version__}; "
          f"top_k={a.top_k} top_p={a.top_p}; CPU ms per call, median of {a.repeats}.", "",
          "| logits | rows x V | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = " | ".join(f"{r['ms'][n]:.1f}" for n in names)
        md.append(f"| {r['case']} | {r['rows']} x {r['vocab']} | {cells} |")
    text = "\n".join(md) + "\n"
    print(text)
    meta = {"threads": a.threads, "repeats": a.repeats, "top_k": a.top_k, "top_p": a.top_p, "torch": torch.__version__,
            "device": describe_device(torch.device("cpu"))}
    js = json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
    atomic_write(a.out / f"{a.stem}.json", lambda tmp: Path(tmp).write_text(js))
    atomic_write(a.out / f"{a.stem}.md", lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
