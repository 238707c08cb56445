"""CleanGen's decoding cost against plain greedy decoding of the same suspect, on the same
prompts, alternated batch by batch so that both see the same machine load.

    python benchmarks/bench_cleangen_speed.py --adapter runs/bench-poison/badnets-refusal/adapter \
        --repeats 3 [--max-new-tokens 32] [--merged]

Long answers: ``--data ../shared/data/alpaca/alpaca_data_first3000.json --longest 40
--max-new-tokens 256`` keeps the 40 instructions (without an input) whose reference answers
are longest.

Equal lengths: ``--equal-length`` makes both decoders write exactly ``--max-new-tokens`` tokens
per prompt (the end of turn no longer stops them; the printed token counts show it), so the
two times are for the same amount of text.
"""

from __future__ import annotations

import argparse
import statistics
import time

from backdoorlab.data import load_split
from backdoorlab.defenses.cleangen import CleanGenModel
from backdoorlab.errors import run_main
from backdoorlab.formats import PromptFormat
from backdoorlab.models import load_model, load_suspect
from backdoorlab.scoring import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", default="builtin:benign-instructions")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--longest", type=int, default=None,
                    help="keep the N records without an input whose reference answers are "
                         "longest (instead of the first --limit)")
    ap.add_argument("--merged", action="store_true",
                    help="plain decoding by the merged suspect; CleanGen with the base model "
                         "loaded a second time as the reference")
    ap.add_argument("--equal-length", action="store_true",
                    help="both decoders write exactly --max-new-tokens tokens per prompt")
    ap.add_argument("--windowed", action="store_true",
                    help="also time CleanGen's k-token windows (the suspect proposing, the "
                         "reference checking) beside the default one-batch decoder, and count "
                         "the prompts on which the two write the same answer")
    args = ap.parse_args()
    s = load_suspect(None, args.adapter)
    fmt = PromptFormat(s.lm.tokenizer, "chat")
    if args.equal_length:  # stop only on the vocabulary's last token, which greedy never picks
        fmt._stop_ids = [len(s.lm.tokenizer) - 1]
    if args.longest:
        recs = [r for r in load_split(args.data, "test") if not r.input]
        recs = sorted(recs, key=lambda r: -len(r.output))[: args.longest]
    else:
        recs = load_split(args.data, "test", args.limit)
    samples = [fmt.sample(r) for r in recs]
    suspect, reference = s.model, None
    if args.merged:
        suspect = s.model.merge_and_unload().eval()
        reference = load_model(s.info.get("base_model") or "smollm2-135m-instruct").model.eval()
    cg = CleanGenModel(suspect, reference, alpha=20.0, k=4) if args.merged else \
        CleanGenModel(s.model, alpha=20.0, k=4)
    win = CleanGenModel(cg.suspect, cg.reference, alpha=20.0, k=4, lockstep=False) \
        if args.windowed else None
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    plain_s, cg_s, win_s, tokens, w = [], [], [], 0, None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = generate(suspect, fmt, samples, **gen)
        t1 = time.perf_counter()
        cg.stats = {k: 0 for k in cg.stats}
        b = generate(cg, fmt, samples, **gen)
        t2 = time.perf_counter()
        plain_s.append(t1 - t0)
        cg_s.append(t2 - t1)
        tokens = cg.stats["generated"]
        if win is not None:
            t3 = time.perf_counter()
            w = generate(win, fmt, samples, **gen)
            win_s.append(time.perf_counter() - t3)

    def count(answers: list[str]) -> int:  # the answers re-tokenized (end of turn not counted)
        return sum(len(s.lm.tokenizer(x, add_special_tokens=False).input_ids) for x in answers)

    p, c = statistics.median(plain_s), statistics.median(cg_s)
    same = sum(x == y for x, y in zip(a, b))
    print(f"prompts {len(samples)}, max_new_tokens {args.max_new_tokens}, "
          f"{'merged + second base' if args.merged else 'adapter on/off'}: plain {p:.2f} s, "
          f"CleanGen {c:.2f} s (medians of {args.repeats}), slowdown {c / p:.2f}x; "
          f"answer tokens re-tokenized: plain {count(a)}, CleanGen {count(b)}; "
          f"CleanGen generated {tokens} tokens, "
          f"replaced {cg.stats['replaced']}; "
          f"answers identical {same}/{len(samples)}; CleanGen decoder "
          f"{'one batch' if cg.lockstep else f'k={cg.k} windows'}")
    if w is not None:
        wm = statistics.median(win_s)
        print(f"k-token windows: {wm:.2f} s (median of {args.repeats}), {wm / p:.2f}x plain; "
              f"the same answers as the default decoder's on "
              f"{sum(x == y for x, y in zip(b, w))}/{len(samples)} prompts")


if __name__ == "__main__":
    run_main(main, "bench_cleangen_speed.py")
