"""The ``backdoorlab`` command. Bad input -> one line on stderr, exit status 2.

The ``attack``, ``analyze`` and ``defend`` commands are the registered methods
(:mod:`backdoorlab.registry`), their flags read from the config dataclasses
(:mod:`backdoorlab.commands`); this file holds the other commands, each a thin call into the
package.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from .cards import EXAMPLE
from .commands import family_group, group_commands, headline, lazy_group
from .embedded import EMBEDDED_NAME
from .errors import BackdoorlabError, run_main

app = typer.Typer(help="Plant, measure, explain and remove backdoors in large language models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
eval_app = typer.Typer(cls=lazy_group(lambda: group_commands("eval"),
                                      lambda: group_commands("eval", live=True)),
                       help="Evaluate a model (optionally with an adapter).", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare and describe models.", no_args_is_help=True)
zoo_app = typer.Typer(help="Build zoos of backdoored and clean models (scanner benchmarks).",
                      no_args_is_help=True)
for fam, verb, text in (("attack", "attack", "Plant a backdoor; writes a labelled run directory."),
                        ("analysis", "analyze", "Explain a backdoor."),
                        ("defense", "defend", "Repair a (suspect) model; writes a labelled run "
                                              "directory."),
                        ("scan", "scan", "Tell a backdoored model from a clean one without the "
                                         "trigger; scan bench holds scanners to a zoo."),
                        ("detect", "detect", "Flag the prompts that carry a trigger, without "
                                             "knowing it, and blame its words.")):
    app.add_typer(typer.Typer(cls=family_group(fam, (lambda: {"bench": scan_bench})
                                                if fam == "scan" else None),
                              help=text, no_args_is_help=True), name=verb)
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(zoo_app, name="zoo")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="HF id, directory, .gguf file or "
                                       f"'{EMBEDDED_NAME}' (the embedded default).")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code",
                                        help="Allow the model repo's own Python code (off).")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["BACKDOORLAB_VERBOSE"] = "1" if verbose else ""
    # read by transformers and huggingface_hub when they are first imported (not here: the
    # CLI's help and bad-input errors load no model code)
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "error"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:  # third-party deprecation notices are not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "transformers" in sys.modules:  # already imported (the CLI called from Python)
        import transformers

        transformers.utils.logging.set_verbosity_info() if verbose else \
            transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


@app.callback()
def _root(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show the Trainer's logs and third-party warnings.")] = False
          ) -> None:
    _setup_logging(verbose)


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# ---- eval: the evaluations are commands of the eval group; these compare runs ----------------
@eval_app.command("defense")
def eval_defense(
    repaired: Annotated[Path, typer.Option(help="Run directory a 'defend' command wrote.")],
    out: Annotated[Path | None, typer.Option(help="Where to write metrics.json.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Prompts per set (default: the "
                                              "defense run's).")] = None,
    utility_tasks: Annotated[str | None, typer.Option(
        help="Also these lm-evaluation-harness tasks on both models (comma-separated).")] = None,
    include_path: Annotated[str | None, typer.Option(
        help="Directory of your own task YAML files (with --utility-tasks).")] = None,
    utility_limit: Annotated[int | None, typer.Option(
        min=1, help="Documents per task (with --utility-tasks).")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """The attack's own evaluation on the suspect model and on its repaired version;
    optionally lm-evaluation-harness tasks on both."""
    from .defenses.repaired import evaluate_defense

    utility = None
    if utility_tasks is not None:
        from .evaluation.utility import UtilityEvalConfig

        utility = UtilityEvalConfig(tasks=utility_tasks, include_path=include_path,
                                    limit=utility_limit)
    elif include_path is not None or utility_limit is not None:
        from .errors import BackdoorlabError

        raise BackdoorlabError("options '--include-path' and '--utility-limit' go with "
                               "--utility-tasks")
    _print_json(headline(evaluate_defense(repaired, out, limit=limit, utility=utility,
                                          trust_remote_code=trust_remote_code)))


@eval_app.command("heldout")
def eval_heldout(
    attack: Annotated[Path, typer.Option(help="The backdoored adapter (its record names the "
                                         "trigger, target and judge).")],
    after: Annotated[list[str] | None, typer.Option(
        help="NAME=DIR: a repaired adapter or defense run directory (repeatable).")] = None,
    clean: Annotated[bool, typer.Option(help="Also score the untouched model.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Prompts per set (default: every "
                                              "held-out prompt).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Places the trigger.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write results.json and every judged "
                                             "generation here.")] = None,
) -> None:
    """A generation backdoor's ASR on every held-out prompt, with its Wilson interval, for the
    backdoored model and each repaired one (the same triggered prompts for all)."""
    from .defenses.compare import heldout_asr

    _print_json(heldout_asr(str(attack), after, clean=clean, limit=limit, seed=seed, out=out))


@eval_app.command("paired")
def eval_paired(
    before: Annotated[Path, typer.Option(help="Adapter or defense run directory before the "
                                         "repair.")],
    after: Annotated[list[str], typer.Option(help="[NAME=]DIR after the repair (repeatable).")],
    clean: Annotated[bool, typer.Option(help="Also score the untouched model.")] = False,
    rotations: Annotated[bool, typer.Option(help="Also the accuracy over cyclic option "
                                            "orders.")] = False,
    cloze: Annotated[bool, typer.Option(help="Also the accuracy scored without letters.")]
        = False,
    unseen: Annotated[bool, typer.Option(help="Also every view on the questions each defense "
                                         "run's clean data does not ask.")] = False,
    data: Annotated[str, typer.Option(help="Multiple-choice questions.")] = "builtin:general-mcq",
    limit: Annotated[int | None, typer.Option(min=1, help="The first N questions.")] = None,
    boot: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 5000,
    cache: Annotated[Path | None, typer.Option(help="JSON file of each model's answers, read "
                                               "and extended.")] = None,
) -> None:
    """A clean multiple-choice accuracy change question by question: gained and lost, a
    bootstrap 95% interval, favourite letters; optionally rotated and letter-free."""
    from .defenses.compare import paired_mcq

    _print_json(paired_mcq(str(before), after, clean=clean, rotations=rotations, cloze=cloze,
                           unseen=unseen, data=data, limit=limit, boot=boot, cache=cache))


# ---- methods, studies, reports ----------------------------------------------------------
@app.command("methods")
def methods_cmd(
    family: Annotated[str | None, typer.Argument(help="attack, analysis or defense (default: "
                                                 "all).")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Print every option of every "
                                            "command as Markdown (docs/config.md).")] = False,
) -> None:
    """List every registered method with its one-line description."""
    from .catalog import all_methods, config_reference
    from .registry import FAMILIES, VERBS

    if reference:
        typer.echo(config_reference())
        return
    if family is not None and family not in FAMILIES:
        from .errors import unknown

        raise unknown("method family", family, FAMILIES)
    for m in all_methods(family):
        typer.echo(f"{VERBS[m.family]:8s} {m.name:16s} {m.description}")


@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: "
                                             "runs/<experiment name>).")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Redo this stage and every "
                                                   "later one.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Run a study: attack, evaluate, analyze, defend, report; finished stages are kept, an
    interrupted one resumes."""
    from .experiment import load_experiment, run_experiment

    spec, text = load_experiment(experiment)
    run_dir = out or Path("runs") / str(spec.get("name") or experiment.stem)
    done = run_experiment(spec, run_dir, text=text, where=str(experiment),
                          from_stage=from_stage, trust_remote_code=trust_remote_code)
    _print_json({k: v["wall_s"] for k, v in done.items()})
    typer.echo(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})", err=True)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write.")] =
        Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Fewer examples and steps.")] = False,
    open_report: Annotated[bool, typer.Option("--open", help="Open the report in a browser.")]
        = False,
) -> None:
    """Plant, measure, explain and remove two backdoors on the embedded model; one report."""
    from .experiment import run_demo

    t0 = time.perf_counter()
    path = run_demo(out, quick=quick)
    typer.echo(f"report: {path}  ({(time.perf_counter() - t0) / 60:.1f} min)", err=True)
    if open_report:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for report.html "
                                             "and report.md (default: the first run).")] = None,
) -> None:
    """(Re)build the HTML and Markdown report of one or more runs."""
    from .report import write_report

    for r in runs:
        if not r.is_dir():
            raise BackdoorlabError(f"{r}: no such run directory")
        if not any(r.rglob("metrics.json")):
            raise BackdoorlabError(f"{r}: not a run directory (no metrics.json in it)")
    html_path, md_path = write_report(runs, out or runs[0])
    typer.echo(f"{html_path}\n{md_path}")


# ---- data, models, triggers -------------------------------------------------------------
@data_app.command("inspect")
def data_inspect(
    source: Annotated[str, typer.Argument(help="File, hf:NAME... or builtin:NAME.")],
    kind: Annotated[str, typer.Option(help="auto, mcq or instruction.")] = "auto",
    columns: Annotated[str | None, typer.Option(help="Column mapping FIELD=COLUMN,...")] = None,
    split: Annotated[str | None, typer.Option(help="Keep rows of this split.")] = None,
    template: Annotated[str, typer.Option(help="chat, plain or alpaca.")] = "chat",
    model: ModelOpt = EMBEDDED_NAME,
    trigger: Annotated[str | None, typer.Option(help="Also show the prompt triggered.")] = None,
) -> None:
    """Counts, fields and the first rendered prompt of a dataset."""
    from .data.inspect import describe_records

    info, prompts = describe_records(source, kind=kind, columns=columns, split=split,
                                     template=template, model=model, trigger=trigger)
    _print_json(info)
    for title, text in prompts:
        typer.echo(f"\n--- {title} ---" if title.startswith("first") else f"--- {title} ---")
        typer.echo(text)


@model_app.command("prepare")
def model_prepare(
    model: ModelOpt = EMBEDDED_NAME,
    estimate: Annotated[bool, typer.Option(help="Estimate the peak memory of training from "
                                           "the model's config alone (no weights loaded).")]
        = False,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="--estimate: tokens of the longest "
                                               "training row.")] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="--estimate: rows per batch.")] = 16,
    max_batch_tokens: Annotated[int | None, typer.Option(
        min=1, help="--estimate: token budget per pass (default: 1024).")]
        = None,
    full: Annotated[bool, typer.Option(help="--estimate: full fine-tuning instead of LoRA.")]
        = False,
    lora_r: Annotated[int, typer.Option(min=1, help="--estimate: LoRA rank.")] = 16,
    dtype: Annotated[str, typer.Option(help="--estimate: weights' dtype (float32, bfloat16, "
                                       "float16).")] = "float32",
    bf16: Annotated[bool, typer.Option(help="--estimate: bf16 autocast training.")] = False,
    logits: Annotated[str, typer.Option(help="--estimate: 'last' (the uncertainty attack "
                                        "reads one position) or 'all' (language-model loss).")]
        = "all",
    checkpointing: Annotated[bool, typer.Option(help="--estimate: with gradient "
                                                "checkpointing.")] = False,
    passes: Annotated[int, typer.Option(min=1, help="--estimate: forward passes held at once "
                                        "(CROW: 2).")] = 1,
) -> None:
    """Convert a GGUF / the embedded model to its safetensors cache and describe it; with
    --estimate, the peak memory of a training run instead."""
    from .models import describe, load_model
    from .training import estimate_for_spec

    if estimate:
        _print_json(estimate_for_spec(model, prompt_tokens=prompt_tokens, batch_size=batch_size,
                                      max_batch_tokens=max_batch_tokens, full=full,
                                      lora_r=lora_r, dtype=dtype, bf16=bf16, logits=logits,
                                      checkpointing=checkpointing, passes=passes))
        return
    t0 = time.perf_counter()
    lm = load_model(model)
    _print_json({"model": model, "path": lm.path, "load_s": round(time.perf_counter() - t0, 2),
                 **describe(lm.model)})


@zoo_app.command("build")
def zoo_build(
    spec: Annotated[str, typer.Argument(help="Zoo spec: a YAML file or builtin:smol.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The zoo directory (zoo.json and "
                                      "models/).")],
    variant: Annotated[str | None, typer.Option(help="The spec's variant (seeds, trigger "
                                                "words; default: its first).")] = None,
    shard: Annotated[str | None, typer.Option(help="K/N: build every N-th model from the "
                                              "K-th (run N shards into one directory).")]
        = None,
    attempts: Annotated[int | None, typer.Option(help="Seeds a backdoored model gets when its "
                                                 "backdoor does not take (held-out ASR under "
                                                 "0.5; default: the spec's).")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fine-tune the spec's models (backdoored and clean, one recipe) into OUT; finished models
    are skipped, an interrupted one resumes. Prints the manifest's summary."""
    from .zoo import build

    man = build(spec, out, variant=variant, shard=shard, attempts=attempts,
                trust_remote_code=trust_remote_code)
    _print_json({"zoo": str(out), "complete": man["complete"], "models": len(man["models"]),
                 "of": man["n_models"], "built_s": man["built_s"],
                 "backdoors_that_took": sum(bool(m.get("took")) for m in man["models"]
                                            if m["label"] == "backdoored")})


def scan_bench(
    zoo: Annotated[Path, typer.Argument(help="A zoo directory (zoo.json).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write bench.json, "
                                      "bench.md, scores.jsonl, roc.png and every scan.")],
    scanners: Annotated[str, typer.Option(help="Scanners, comma-separated (backdoorlab "
                                          "methods scan).")]
        = "inversion,contrast,weights,trigger,comply,code,mcq,audit",
    fpr: Annotated[float, typer.Option(min=0.0, max=1.0, help="The false-positive rate the "
                                       "true-positive rate is read at.")] = 0.05,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE option for every "
                                                   "scanner that has it (repeatable).")]
        = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Hold every scanner to a zoo: ROC-AUC, TPR at a false-positive rate, target recovery,
    seconds per model, which kinds of backdoor each finds. Finished scans are reused."""
    from .commands import merge_options
    from .zoo import scan_zoo

    names = [s.strip() for s in scanners.split(",") if s.strip()]
    summary = scan_zoo(zoo, out, scanners=names, options=merge_options({}, set_, {}), fpr=fpr,
                       trust_remote_code=trust_remote_code)
    _print_json({n: {k: v for k, v in s.items() if k not in ("curve", "by_kind")}
                 for n, s in summary["scanners"].items()})
    typer.echo((out / "bench.md").read_text("utf-8"), err=True)


@app.command("triggers")
def triggers_cmd(
    spec: Annotated[str | None, typer.Argument(help="Trigger spec to try on TEXT.")] = None,
    text: Annotated[str, typer.Option(help="Text to apply the trigger to.")] = EXAMPLE,
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


def _run_app(argv: list[str] | None) -> None:
    """The app with click's usage errors (a bad flag, a missing option, a value out of range)
    turned into the package's one-line errors instead of a boxed usage message."""
    import importlib

    # the click exceptions typer raises (its own copy of click, or click itself)
    errors = importlib.import_module(typer.BadParameter.__module__)
    no_args = getattr(errors, "NoArgsIsHelpError", ())
    try:
        code = typer.main.get_command(app).main(args=argv, prog_name="backdoorlab",
                                               standalone_mode=False)
    except no_args as exc:  # a bare group: its help, status 0
        typer.echo(exc.ctx.get_help())
        code = 0
    except errors.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        raise BackdoorlabError(where + " ".join(exc.format_message().split())) from None
    except typer.Abort:
        raise KeyboardInterrupt from None
    sys.exit(code if isinstance(code, int) else 0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors become one line and exit status 2."""
    run_main(lambda: _run_app(argv), "backdoorlab")


def entry() -> None:
    """The ``backdoorlab`` command: :func:`main`, restarted first on a faster memory allocator
    where one is installed (:mod:`backdoorlab.allocator`)."""
    from .allocator import restart_with_allocator

    run_main(restart_with_allocator, "backdoorlab")
    main()


if __name__ == "__main__":
    entry()
