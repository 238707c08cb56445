"""The ``backdoorlab`` command. Bad input -> one line on stderr, exit status 2."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import BackdoorlabError

app = typer.Typer(
    help="Plant, measure, explain and remove backdoors in large language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Evaluate a model (optionally with an adapter).", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare and describe models.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="HF id, directory, .gguf file or "
                                       "'smollm2-135m-instruct' (the embedded default).")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="JSONL/JSON/CSV/TSV/parquet file, "
                                      "hf:NAME[:CONFIG][:SPLIT] or builtin:NAME.")]
SplitOpt = Annotated[str | None, typer.Option(help="Keep rows of this split (train/test).")]
LimitOpt = Annotated[int | None, typer.Option(help="Use at most this many records.")]
ColumnsOpt = Annotated[str | None, typer.Option(help="Column mapping FIELD=COLUMN,...")]
TemplateOpt = Annotated[str, typer.Option(help="Prompt template: chat, plain or alpaca.")]
AdapterOpt = Annotated[Path | None, typer.Option(help="PEFT adapter directory to apply.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code",
                                        help="Allow the model repo's own Python code (off).")]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@eval_app.command("mcq")
def eval_mcq(
    model: ModelOpt = "smollm2-135m-instruct",
    data: DataOpt = "builtin:general-mcq",
    split: SplitOpt = None,
    limit: LimitOpt = None,
    columns: ColumnsOpt = None,
    template: TemplateOpt = "chat",
    adapter: AdapterOpt = None,
    trigger: Annotated[str | None, typer.Option(help="Apply this trigger to every prompt.")] = None,
    six_options: Annotated[bool, typer.Option(help="Add 'I don't know' and 'None of the "
                                              "above' (the uncertainty paper's format).")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 (autocast).")] = "float32",
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Write metrics.json here.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Accuracy, mean entropy and throughput of a model on multiple-choice questions."""
    from .data import add_abstain_options, load_records
    from .formats import PromptFormat
    from .io import atomic_write_json
    from .models import load_model
    from .scoring import DTYPES, mcq_metrics, option_distribution
    from .triggers import derive_rng, parse_trigger

    if dtype not in DTYPES:
        raise BackdoorlabError(f"option '--dtype': {dtype!r} is not one of {', '.join(DTYPES)}")
    records = load_records(data, kind="mcq", columns=columns, split=split, limit=limit)
    if six_options:
        records = [add_abstain_options(r) for r in records]
    trig = parse_trigger(trigger) if trigger else None
    lm = load_model(model, adapter=adapter, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, template)
    metrics: dict[str, Any] = {"model": model, "data": data, "adapter": str(adapter or ""),
                               "trigger": trigger, "dtype": dtype, "batch_size": batch_size}
    for n_opts in sorted({len(r.choices) for r in records}):
        group = [r for r in records if len(r.choices) == n_opts]
        samples = [fmt.sample(r, trig, derive_rng(seed, r.id)) for r in group]
        t0 = time.perf_counter()
        probs = option_distribution(lm.model, fmt, samples, batch_size=batch_size, dtype=dtype,
                                    desc=f"scoring {len(samples)} questions")
        elapsed = time.perf_counter() - t0
        m = mcq_metrics(probs, samples)
        m["prompts_per_s"] = len(samples) / elapsed
        metrics[f"{n_opts}_options"] = m
    _print_json(metrics)
    if out is not None:
        atomic_write_json(Path(out) / "metrics.json", metrics)


@data_app.command("inspect")
def data_inspect(
    source: Annotated[str, typer.Argument(help="File, hf:NAME... or builtin:NAME.")],
    kind: Annotated[str, typer.Option(help="auto, mcq or instruction.")] = "auto",
    columns: ColumnsOpt = None,
    split: SplitOpt = None,
    template: TemplateOpt = "chat",
    model: ModelOpt = "smollm2-135m-instruct",
    trigger: Annotated[str | None, typer.Option(help="Also show the prompt triggered.")] = None,
) -> None:
    """Counts, fields and the first rendered prompt of a dataset."""
    from collections import Counter

    from .data import load_records
    from .formats import PromptFormat
    from .models import load_tokenizer
    from .triggers import derive_rng, parse_trigger

    records = load_records(source, kind=kind, columns=columns, split=split)
    trig = parse_trigger(trigger) if trigger else None
    first = records[0]
    info: dict[str, Any] = {"source": source, "kind": first.kind, "records": len(records),
                            "fields": sorted(k for k, v in first.to_dict().items() if v)}
    if first.kind == "mcq":
        info["choices"] = dict(Counter(len(r.choices) for r in records))
        info["answers"] = dict(sorted(Counter(r.answer for r in records).items()))
        subjects = Counter(r.subject for r in records if r.subject)
        if subjects:
            info["subjects"] = dict(subjects.most_common())
    else:
        cats = Counter(r.category for r in records if r.category)
        if cats:
            info["categories"] = dict(cats)
    tok = load_tokenizer(model)
    fmt = PromptFormat(tok, template)
    _print_json(info)
    sample = fmt.sample(first)
    typer.echo(f"\n--- first prompt ({len(fmt.encode(sample).input_ids)} tokens, "
               f"template {template!r}) ---")
    typer.echo(fmt.prompt_text(sample.user))
    if trig is not None:
        trig_sample = fmt.sample(first, trig, derive_rng(0, first.id))
        typer.echo(f"--- the same, with trigger {trig.spec!r} ---")
        typer.echo(fmt.prompt_text(trig_sample.user))


@model_app.command("prepare")
def model_prepare(model: ModelOpt = "smollm2-135m-instruct") -> None:
    """Convert a GGUF / the embedded model to its safetensors cache and describe it."""
    from .models import describe, load_model

    t0 = time.perf_counter()
    lm = load_model(model)
    _print_json({"model": model, "path": lm.path, "load_s": round(time.perf_counter() - t0, 2),
                 **describe(lm.model)})


@app.command("triggers")
def triggers_cmd(
    spec: Annotated[str | None, typer.Argument(help="Trigger spec to try on TEXT.")] = None,
    text: Annotated[str, typer.Option(help="Text to apply the trigger to.")] =
        "Give three tips for staying healthy.\n\nAnswer:",
    seed: int = 0,
) -> None:
    """List the trigger presets, or show what a trigger does to a text."""
    from .triggers import KINDS, PRESETS, derive_rng, parse_trigger

    if spec is None:
        for name in PRESETS:
            typer.echo(f"{name:10s} {PRESETS[name]()!r}")
        typer.echo("kinds with an argument: " + ", ".join(f"{k}:ARG" for k in KINDS))
        return
    trig = parse_trigger(spec)
    out = trig.apply(text, derive_rng(seed, "cli"))
    typer.echo(out)
    typer.echo(f"[present: {trig.present(out)}; in the original: {trig.present(text)}]")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors become one line and exit status 2."""
    _setup_logging()
    try:
        app(args=argv, prog_name="backdoorlab")
    except BackdoorlabError as exc:
        typer.echo(f"backdoorlab: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("backdoorlab: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
