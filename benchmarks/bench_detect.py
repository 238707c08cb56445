"""Input detection table: each detector on each backdoor, the backdoor's own trigger planted in
half of the held-out prompts (``detect --trigger``), the threshold set on clean calibration
prompts of the same source. Each finished cell is saved to ``OUT/results.json`` at once.

    python benchmarks/bench_detect.py --out runs/bench-detect \
        --case badnets:badnets:runs/bench-poison/badnets-refusal/adapter \
        --case unalign-long:long:runs/unalign-long/attack/adapter:builtin:harmful-requests \
        --detectors onion,shift
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-detect")
    ap.add_argument("--case", action="append", required=True,
                    help="NAME:TRIGGER:ADAPTER[:DATA] (ADAPTER '-': the embedded model, enough "
                         "for onion, which reads the clean base only; DATA: the prompts' and "
                         "calibration's source, default builtin:benign-instructions)")
    ap.add_argument("--detectors", default="onion,shift")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="detector option for every cell, e.g. n_prompts=40 (repeatable)")
    args = ap.parse_args()
    options = merge_options({}, args.set, {})
    out = Path(args.out)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for case in args.case:
        name, trigger, adapter, *data = case.split(":", 3)
        source = {"data": data[0], "calibration": data[0]} if data else {}
        for det in args.detectors.split(","):
            cell = f"{name}:{det}"
            if cell in results:
                continue
            t0 = time.perf_counter()
            suspect = {} if adapter == "-" else {"adapter": adapter}
            m = get("detect", det).run({**options, **source, "trigger": trigger, **suspect},
                                       out / name / det).metrics
            m["cell_wall_s"] = round(time.perf_counter() - t0, 1)
            results[cell] = m
            atomic_write_json(path, results)
            print(f"{cell}: AUC {m['roc_auc']:.3f} {m['roc_auc_ci95']}, TPR {m['tpr']:.3f} "
                  f"at FPR {m['fpr']:.3f}, blame {m['blame_hit']:.3f} of {m['detected']}, "
                  f"{m['cell_wall_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    run_main(main, "bench_detect.py")
