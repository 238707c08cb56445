"""Defense table: attacks x defenses on SmolLM2 adapters from the attack benchmarks.
Each finished cell is saved to ``OUT/results.json`` at once.

    python benchmarks/bench_defense.py --out runs/bench-defense \
        --attack badnets-refusal=runs/bench-poison/badnets-refusal/adapter \
        --cells badnets-refusal:crow,badnets-refusal:finetune
    # a variant of the defaults, in its own folder (applies to every cell):
    python benchmarks/bench_defense.py --out runs/bench-defense-e6 --set train.epochs=6 ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from backdoorlab.catalog import get
from backdoorlab.commands import merge_options
from backdoorlab.errors import run_main
from backdoorlab.io import atomic_write_json

DEFENSES = ("crow", "finetune", "prune", "ablate-heads", "subtract-vector", "cleangen", "quantize")


def run(defense: str, adapter: str, out: Path, scores: str | None,
        options: dict | None = None) -> dict:
    base = {**(options or {}), "adapter": adapter}
    if defense in ("ablate-heads", "subtract-vector"):
        base["scores"] = scores
    return get("defense", defense).run(base, out).metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-defense")
    ap.add_argument("--attack", action="append", required=True, help="NAME=ADAPTER_DIR")
    ap.add_argument("--cells", required=True, help="ATTACK:DEFENSE,... in order")
    ap.add_argument("--scores", action="append", default=[],
                    help="ATTACK=heads.safetensors from an analysis run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="defense option for every cell, e.g. train.epochs=6 (repeatable)")
    args = ap.parse_args()
    attacks = dict(a.split("=", 1) for a in args.attack)
    scores = dict(s.split("=", 1) for s in args.scores)
    options = merge_options({}, args.set, {})
    out = Path(args.out)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for cell in args.cells.split(","):
        attack, defense = cell.split(":", 1)
        if cell in results:
            continue
        t0 = time.perf_counter()
        m = run(defense, attacks[attack], out / attack / defense, scores.get(attack), options)
        m["cell_wall_s"] = time.perf_counter() - t0
        results[cell] = m
        atomic_write_json(path, results)
        print(f"{cell}: ASR {m['asr_triggered_before']:.3f} -> {m['asr_triggered_after']:.3f}, "
              f"MCQ {m['mcq_accuracy_change']:+.3f}, "
              f"ppl {m.get('perplexity_change', float('nan')):+.1%}, "
              f"{m['cell_wall_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    run_main(main, "bench_defense.py")
