"""Explain a backdoor: probe, heads (exact and fast), ablation and vector on backdoored
SmolLM2 adapters. Each finished step is saved to ``OUT/results.json`` at once.

    python benchmarks/bench_analysis.py --out runs/bench-analysis \
        --adapter badnets-refusal=runs/bench-poison/badnets-refusal/adapter \
        --adapter uncertainty-text=runs/bench-uncertainty/text-6opt/adapter
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from backdoorlab.analysis.attribution import run_ablate, run_heads
from backdoorlab.analysis.probe import run_probe
from backdoorlab.analysis.vector import run_vector
from backdoorlab.errors import run_main
from backdoorlab.io import atomic_write_json

STEPS = ("probe", "heads", "ablate", "vector")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-analysis")
    ap.add_argument("--adapter", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--heads-limit", type=int, default=16)
    ap.add_argument("--vector-layers", default=None, help="e.g. 0,2,4 (default: all)")
    args = ap.parse_args()
    out = Path(args.out)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for item in args.adapter:
        name, adapter = item.split("=", 1)
        base = {"adapter": adapter}
        for step in args.steps.split(","):
            key = f"{name}/{step}"
            if key in results:
                continue
            d = out / name / step
            scores = str(out / name / "heads" / "heads.safetensors")
            t0 = time.perf_counter()
            if step == "probe":
                m = run_probe({**base, "limit": 100}, d)
            elif step == "heads":
                m = run_heads({**base, "mode": "both", "limit": args.heads_limit}, d)
            elif step == "ablate":
                m = run_ablate({**base, "scores": scores}, d)
            else:
                layers = ([int(x) for x in args.vector_layers.split(",")]
                          if args.vector_layers else None)
                m = run_vector({**base, "scores": scores, "layers": layers}, d)
            m["step_wall_s"] = time.perf_counter() - t0
            results[key] = m
            atomic_write_json(path, results)
            print(f"{key}: {m['step_wall_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    run_main(main, "bench_analysis.py")
