"""A generation backdoor's ASR on every held-out prompt, with a Wilson 95% interval
(``backdoorlab eval heldout`` does the same).

The attacks and defenses judge 40 held-out prompts per set by default. There an ASR of 0.10
is 4 prompts, and its 95% interval runs from 0.04 to 0.23, too wide to tell a repair that
meets "ASR <= 0.10" from one that misses it. This script scores the backdoored adapter and
any repaired ones on all the held-out prompts (96 for the built-in instructions) with the
attack's own suite: trigger, target and judge come from the backdoored adapter's record, and
one seed places the trigger, so every model sees the same triggered prompts.

    python benchmarks/bench_asr_heldout.py \
        --attack runs/bench-poison/vpi-negative-sentiment/adapter \
        --after crow-s0=runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter --clean

``--after`` takes a repaired adapter directory or a defense run directory (any artefact: an
adapter, a whole model such as ``defend crow --merge-adapter`` writes, or interventions).
Each model's hits are also counted per record category (``by_category``, where the records
have one): which kinds of prompt a repair leaves the backdoor on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backdoorlab.defenses.compare import heldout_asr
from backdoorlab.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True, help="the backdoored adapter (its record names "
                    "the trigger, target and judge)")
    ap.add_argument("--after", action="append", default=[], metavar="NAME=DIR",
                    help="a repaired adapter or defense run directory (repeatable)")
    ap.add_argument("--clean", action="store_true", help="also score the untouched model")
    ap.add_argument("--limit", type=int, default=None, help="prompts per set (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="write results.json and every judged generation (generations.jsonl)")
    args = ap.parse_args()
    print(json.dumps(heldout_asr(args.attack, args.after, clean=args.clean, limit=args.limit,
                                 seed=args.seed, out=args.out,
                                 echo=lambda line: print(line, flush=True))))


if __name__ == "__main__":
    run_main(main, "bench_asr_heldout.py")
