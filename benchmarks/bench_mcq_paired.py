"""Paired view of a clean-MCQ accuracy change: which questions a defense made right or wrong,
and a bootstrap 95% interval of the change (issue 6's "within 2 points").

    python benchmarks/bench_mcq_paired.py \
        --before runs/bench-poison/vpi-negative-sentiment/adapter \
        --after runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter
"""

from __future__ import annotations

import argparse
import json
import random

from backdoorlab.data import load_records
from backdoorlab.formats import PromptFormat
from backdoorlab.models import load_adapter, load_model
from backdoorlab.scoring import mcq_correct


def correct(adapter: str, fmt: PromptFormat, samples: list) -> list[int]:
    model = load_adapter(load_model("smollm2-135m-instruct").model, adapter)
    return mcq_correct(model, fmt, samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="adapter before the defense")
    ap.add_argument("--after", required=True, help="adapter after the defense")
    ap.add_argument("--data", default="builtin:general-mcq")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions")
    ap.add_argument("--boot", type=int, default=5000)
    args = ap.parse_args()
    recs = load_records(args.data, kind="mcq", limit=args.limit)
    fmt = PromptFormat(load_model("smollm2-135m-instruct").tokenizer, "chat")
    samples = [fmt.sample(r) for r in recs]
    b, a = (correct(x, fmt, samples) for x in (args.before, args.after))
    d = [y - x for x, y in zip(b, a)]
    n, rng = len(d), random.Random(0)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(args.boot))
    print(json.dumps({"n": n, "before": sum(b) / n, "after": sum(a) / n, "change": sum(d) / n,
                      "gained": d.count(1), "lost": d.count(-1),
                      "ci95": [boots[int(0.025 * args.boot)], boots[int(0.975 * args.boot)]]}))


if __name__ == "__main__":
    main()
