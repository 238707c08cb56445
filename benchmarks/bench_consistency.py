"""CROW's premise across models: the layer inconsistency that the trigger adds, for the
backdoored model, the untouched one and any repaired ones, on the same prompts.

For each model, ``1 - cos`` of consecutive hidden states is averaged over the prompt tokens the
trigger can reach (``span``) and read at the last prompt token (``last``), for the clean and
the triggered version of every held-out record; the gap (triggered minus clean) comes with a
paired bootstrap 95% interval (``backdoorlab.analysis.consistency``, which ``backdoorlab
analyze consistency`` runs on one model). Trigger, target and prompt format come from the
backdoored adapter's record, and one seed places the trigger, so every model sees the same
prompts.

    python benchmarks/bench_consistency.py \
        --attack runs/bench-poison/vpi-negative-sentiment/adapter --clean \
        --after crow-s0=runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter

``--after`` takes a repaired adapter directory or a defense run directory (any artefact).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from backdoorlab.analysis.behaviour import behaviour_for
from backdoorlab.analysis.consistency import consistency_profile, summarise
from backdoorlab.defenses.repaired import check_scorables, load_scorable, named_paths
from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.io import atomic_write_json
from backdoorlab.models import load_suspect


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True, help="the backdoored adapter (its record names "
                    "the trigger, target and prompt format)")
    ap.add_argument("--after", action="append", default=[], metavar="NAME=DIR",
                    help="a repaired adapter or defense run directory (repeatable)")
    ap.add_argument("--clean", action="store_true", help="also score the untouched model")
    ap.add_argument("--limit", type=int, default=None, help="held-out records (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write results.json here")
    args = ap.parse_args()
    models = check_scorables({"backdoored": args.attack} | named_paths(args.after) |
                             ({"clean": None} if args.clean else {}))
    suspect = load_suspect(adapter=args.attack)
    if not suspect.info.get("trigger"):
        raise BackdoorlabError(f"--attack {args.attack}: no attack record naming the trigger "
                               "(expected a backdoored adapter directory)")
    base = suspect.info.get("base_model") or "smollm2-135m-instruct"
    beh = behaviour_for(suspect, limit=args.limit, seed=args.seed)
    loaded = {"backdoored": suspect.model}  # already in memory: scored without a reload
    del suspect
    out: dict[str, dict] = {}
    for name, path in models.items():
        t0 = time.perf_counter()
        model = loaded.pop(name) if name in loaded else load_scorable(path, base)
        s = summarise(consistency_profile(model, beh), seed=args.seed)
        del model
        out[name] = {v: {k: s[v][k] for k in ("clean", "triggered", "gap", "gap_ci95",
                                              "share_higher", "peak_pair", "peak_gap",
                                              "clean_per_pair", "triggered_per_pair")}
                     for v in ("span", "last")} | {"wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps({name: {v: {k: out[name][v][k] for k in ("gap", "gap_ci95",
                                                                  "peak_pair", "peak_gap")}
                                 for v in ("span", "last")}}), flush=True)
    result = {"attack": args.attack, "behaviour": beh.describe(), "pairs": s["pairs"],
              "seed": args.seed, "models": out}
    if args.out is not None:
        atomic_write_json(args.out / "results.json", result)


if __name__ == "__main__":
    run_main(main, "bench_consistency.py")
