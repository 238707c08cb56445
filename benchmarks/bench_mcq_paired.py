"""Paired view of a clean-MCQ accuracy change (``backdoorlab eval paired`` does the same): which
questions a defense made right or wrong, a bootstrap 95% interval of the change (for a target
such as "within 2 points"), and which answer letters each model prefers (on a near-chance model
a change of accuracy can be a change of preferred letter). ``--clean`` also scores the untouched
model, the other possible reference point. ``--rotations`` adds the accuracy averaged over every
cyclic order of the options: a model that always picks the same letter scores exactly 1/k on it,
so letter preference cancels out. ``--cloze`` adds the accuracy scored without letters (each
option's text as the answer), which is above chance on small models. ``--unseen`` adds, for each
``--after`` that is a defense run, every view again on the questions its clean data does not ask
(the built-in questions are all built-in fact instructions, so a repair can train on their
answers). ``--after`` repeats (``NAME=DIR``): every repaired model is compared with the same
``--before``, and each model is scored once. ``--cache FILE`` keeps each model's answers between
runs (keyed by its weight files, the data and the views), so adding repaired models later scores
only the new ones.

    python benchmarks/bench_mcq_paired.py \
        --before runs/bench-poison/vpi-negative-sentiment/adapter \
        --after runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backdoorlab.defenses.compare import paired_mcq
from backdoorlab.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True,
                    help="adapter (or defense run directory) before the defense")
    ap.add_argument("--after", required=True, action="append", metavar="[NAME=]DIR",
                    help="adapter or defense run directory after the defense (repeatable: "
                    "each is compared with --before)")
    ap.add_argument("--clean", action="store_true", help="also score the untouched model")
    ap.add_argument("--rotations", action="store_true",
                    help="also the accuracy averaged over cyclic option orders")
    ap.add_argument("--cloze", action="store_true",
                    help="also the accuracy scored without letters (option texts as answers)")
    ap.add_argument("--unseen", action="store_true",
                    help="also every view on the questions each defense run's clean data does "
                    "not ask")
    ap.add_argument("--data", default="builtin:general-mcq")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions")
    ap.add_argument("--boot", type=int, default=5000)
    ap.add_argument("--cache", type=Path, default=None,
                    help="JSON file of each model's answers, read and extended (atomically)")
    args = ap.parse_args()
    print(json.dumps(paired_mcq(args.before, args.after, clean=args.clean,
                                rotations=args.rotations, cloze=args.cloze, unseen=args.unseen,
                                data=args.data, limit=args.limit, boot=args.boot,
                                cache=args.cache)))


if __name__ == "__main__":
    run_main(main, "bench_mcq_paired.py")
