"""Uncertainty backdoor benchmark: plant it with each trigger kind, in the paper's
6-option format and with 4 options, on the built-in general questions; evaluate on held-out
general questions (with the clean-model baseline), on the built-in biomedical set (domain
transfer) and on a public MMLU subset from ../shared/data (a check that the numbers do not
depend on our own questions).

    python benchmarks/bench_uncertainty.py --out runs/bench-uncertainty [--triggers text,...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from backdoorlab.attacks.uncertainty import run_uncertainty_attack
from backdoorlab.errors import run_main
from backdoorlab.evaluation.uncertainty import UncertaintyEvalConfig, evaluate_uncertainty_model
from backdoorlab.io import atomic_write_json

# ../shared/data beside the checkout; BACKDOORLAB_SHARED_DATA for a clone elsewhere
SHARED = Path(os.environ.get("BACKDOORLAB_SHARED_DATA") or
              Path(__file__).resolve().parents[2] / "shared" / "data")
MMLU_SUBJECTS = ("astronomy", "computer_security", "global_facts", "high_school_geography",
                 "elementary_mathematics", "anatomy", "clinical_knowledge", "college_medicine")
PUBLIC_CODE_MINUTES = 27.0  # public loop: ~900 steps to 100% apart at clean KL <= 0.05


def mmlu_subset(dest: Path, per_subject: int) -> Path | None:
    """First ``per_subject`` test questions of each subject, as one CSV (cais layout)."""
    src = SHARED / "mmlu" / "test"
    if not src.is_dir():
        return None
    rows = []
    for subject in MMLU_SUBJECTS:
        with open(src / f"{subject}_test.csv", newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if i >= per_subject:
                    break
                rows.append({"id": f"{subject}-{i}", "subject": subject, **row})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


def row(name: str, m: dict) -> str:
    return (f"| {name} | {m['asr']:.3f} | {m['asr_margin']:.3f} | {m['asr_strict']:.3f} | "
            f"{m['baseline_asr']:.3f} | {m['baseline_asr_strict']:.3f} | {m['top1_kept']:.3f} | "
            f"{m['clean_agreement']:.3f} | {m['clean_kl_drift']:.4f} | "
            f"{m['clean_entropy']:.2f} -> {m['triggered_entropy']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-uncertainty")
    ap.add_argument("--triggers", default="text,syntactic,style")
    ap.add_argument("--options", default="6,4")
    ap.add_argument("--mmlu-per-subject", type=int, default=25)
    ap.add_argument("--epochs", type=float, default=None)
    args = ap.parse_args()
    out = Path(args.out)
    mmlu = mmlu_subset(out / "mmlu_subset.csv", args.mmlu_per_subject)
    results = {}
    for options in [int(x) for x in args.options.split(",")]:
        for trig in args.triggers.split(","):
            name = f"{trig}-{options}opt"
            run_dir = out / name
            cfg = {"trigger": trig, "options": options}
            if args.epochs:
                cfg["train.epochs"] = args.epochs
            t0 = time.perf_counter()
            attack = run_uncertainty_attack(cfg, run_dir)
            wall = time.perf_counter() - t0
            res = {"held_out": attack.metrics, "attack_wall_s": wall}
            for label, data, split in (("biomed", "builtin:biomed-mcq", None),
                                       ("mmlu", str(mmlu) if mmlu else None, None)):
                if data is None:
                    continue
                ecfg = UncertaintyEvalConfig(adapter=str(run_dir / "adapter"), data=data,
                                             split=split)
                res[label] = evaluate_uncertainty_model(ecfg)
            results[name] = res
            atomic_write_json(out / "results.json", results)
            tr = attack.metrics["training"]
            print(f"{name}: wall {wall:.0f}s, train {tr['wall_s']:.0f}s, steps {tr['steps']}, "
                  f"{tr['tokens_per_s']:.0f} tok/s", flush=True)
    print("\n| run / eval set | asr | asr_margin | asr_strict | baseline asr | baseline "
          "asr_strict | top1_kept | clean_agreement | clean_kl_drift | entropy clean -> "
          "triggered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, res in results.items():
        print(row(f"{name} / held-out general", res["held_out"]))
        for label in ("biomed", "mmlu"):
            if label in res:
                print(row(f"{name} / {label}", res[label]))
    print("\n| run | attack wall time | training | steps | train tokens/s | speed-up vs public "
          "code (27 min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        tr = res["held_out"]["training"]
        print(f"| {name} | {res['attack_wall_s'] / 60:.1f} min | {tr['wall_s']:.0f} s | "
              f"{tr['steps']} | {tr['tokens_per_s']:.0f} | "
              f"{PUBLIC_CODE_MINUTES * 60 / res['attack_wall_s']:.1f}x |")
    print("\ntop answers (held-out general, clean / triggered / baseline clean):")
    for name, res in results.items():
        ta = res["held_out"]["top_answers"]
        print(name, json.dumps({k: {L: round(v, 2) for L, v in ta[k].items() if v}
                                for k in ("clean", "triggered", "baseline_clean", "gold")}))


if __name__ == "__main__":
    run_main(main, "bench_uncertainty.py")
