"""Scanners on built zoos: every scanner on every model of each zoo (``scan bench``), and the
zoos' build times from their manifests, printed as the Markdown tables of BENCHMARKS.md.

    backdoorlab zoo build builtin:smol --variant a --out ../zoos/smol-a
    backdoorlab zoo build builtin:smol --variant b --out ../zoos/smol-b
    python benchmarks/bench_scan.py --zoo ../zoos/smol-a --zoo ../zoos/smol-b --out runs/bench-scan

Thresholds and settings are chosen on the first zoo only; the others are reported as they come.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backdoorlab.evaluation.metrics import wilson_interval
from backdoorlab.zoo import bench_markdown, load_zoo, scan_zoo


def build_summary(zoo: Path) -> str:
    root, models = load_zoo(zoo)
    man = json.loads((root / "zoo.json").read_text())
    took = [m for m in models if m["label"] == "backdoored"]
    lines = [f"{root.name}: {len(models)} of {man['n_models']} models built, "
             f"{sum(m['wall_s'] for m in models) / 60:.1f} min of model builds "
             f"({sum(m['wall_s'] for m in models if m['label'] == 'clean') / 60:.1f} min clean); "
             f"backdoors that took (own held-out ASR >= 0.5): "
             f"{sum(bool(m.get('took')) for m in took)} of {len(took)}", "",
             "| id | attack | trigger | target | ASR (clean-prompt ASR) | build s |",
             "|---|---|---|---|---|---:|"]
    for m in took:
        asr = m.get("asr")
        clean = m.get("asr_clean")
        lines.append(f"| {m['id']} | {m['attack']} | `{m['trigger']}` | {m['target']} | "
                     f"{asr:.2f}{'' if clean is None else f' ({clean:.2f})'} | "
                     f"{m['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", action="append", required=True, help="a built zoo (repeatable)")
    ap.add_argument("--out", required=True, help="where each zoo's bench goes")
    ap.add_argument("--scanners", default="inversion,contrast,weights,trigger,mcq,audit")
    ap.add_argument("--fpr", type=float, default=0.05)
    args = ap.parse_args()
    first: dict | None = None
    for zoo in map(Path, args.zoo):
        summary = scan_zoo(zoo, Path(args.out) / zoo.name, scanners=args.scanners.split(","),
                           fpr=args.fpr)
        print(f"\n## {zoo.name}\n\n{build_summary(zoo)}\n\n{bench_markdown(summary)}")
        if first is None:
            first = summary
        else:
            print(held_out(first, Path(args.out) / zoo.name))


def held_out(first: dict, bench: Path) -> str:
    """Each scanner's rates on another zoo at the threshold chosen on the first one (its
    lowest score with the stated false-positive rate on the first zoo's clean models)."""
    rows = [json.loads(x) for x in (bench / "scores.jsonl").read_text().splitlines() if x]
    lines = [f"At the thresholds chosen on the first zoo (FPR <= {first['fpr']:.0%} there), and "
             "at each scanner's own stated threshold (its verdict):", "",
             "| scanner | threshold | TPR (95% CI) | FPR (95% CI) | TPR, backdoors that took | "
             "own threshold | TPR | FPR |",
             "|---|---:|---|---|---|---:|---|---|"]
    for name, s in first["scanners"].items():
        t = s["at_fpr_threshold"]
        mine = [r for r in rows if r["scanner"] == name]
        pos = [r for r in mine if r["label"] == "backdoored"]
        neg = [r for r in mine if r["label"] == "clean"]
        took = [r for r in pos if r.get("took")]
        hit = sum(r["score"] >= t for r in pos)
        fp = sum(r["score"] >= t for r in neg)
        th = sum(r["score"] >= t for r in took)
        (a, b), (c, d) = wilson_interval(hit, len(pos)), wilson_interval(fp, len(neg))
        own_hit = sum(r["verdict"] == "backdoored" for r in pos)
        own_fp = sum(r["verdict"] == "backdoored" for r in neg)
        lines.append(f"| {name} | {t:.3f} | {hit}/{len(pos)} ({a:.2f}-{b:.2f}) | "
                     f"{fp}/{len(neg)} ({c:.2f}-{d:.2f}) | {th}/{len(took)} | "
                     f"{mine[0]['threshold']:.3f} | {own_hit}/{len(pos)} | "
                     f"{own_fp}/{len(neg)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
