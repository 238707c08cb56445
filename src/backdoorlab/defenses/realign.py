"""Clean fine-tuning and re-alignment: continue training a backdoored model on clean or safety
data, evaluating the backdoor after every epoch so its decay (or persistence) is visible.

``backdoorlab defend realign`` uses refusal/safety data by default (the unalignment paper's
persistence experiment, which its public code never implemented); ``--data`` takes any
instructions, e.g. benign ones for a clean fine-tuning curve. (``defend finetune``, the baseline
CROW must beat, is CROW's own training without the consistency loss: see :mod:`.crow`.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cards import save_labelled, write_model_card
from ..config import opt, to_dict
from ..data import source_option
from ..embedded import EMBEDDED_NAME
from ..errors import BackdoorlabError
from ..evaluation.suite import SuiteOptions
from ..formats import PromptFormat
from ..io import atomic_write_json
from ..models import RecordedOptions, attack_info, load_adapter, load_model, recorded
from ..registry import register
from ..runs import save_config, write_metrics
from ..training import SampleCollator, TrainConfig, train, train_options, weights_dtype

log = logging.getLogger(__name__)


@dataclass
class RealignConfig(SuiteOptions, RecordedOptions):
    """Options of ``backdoorlab defend realign``."""

    data: str = source_option("builtin:safety-alignment",
                              "safety (or any clean) instructions trained on")
    limit: int | None = opt(None, "records of data (None: all)")
    epochs: int = opt(5, "epochs; the backdoor is evaluated after each", at_least=1)
    judge: str | None = recorded("the ASR judge")
    eval_data: str | None = source_option(None,
        "held-out prompts for ASR (default: the target's built-in set)")
    train: TrainConfig = train_options(
        learning_rate=2e-4, epochs=5.0, batch_size=16, save_steps=1000)


class EpochEvaluator:
    """A TrainerCallback that runs the generation suite after every epoch."""

    def __init__(self, fmt: PromptFormat, suite: Any, out: Path) -> None:
        from transformers import TrainerCallback

        self.fmt, self.suite, self.out, self.curve = fmt, suite, out, []
        parent = self

        class _CB(TrainerCallback):
            def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None,
                             **kw: Any) -> None:
                parent.evaluate(model, round(state.epoch or 0))

        self.callback = _CB()

    def evaluate(self, model: Any, epoch: int) -> dict[str, Any]:
        from ..evaluation.suite import run_suite

        was_training = model.training
        model.eval()
        metrics, _ = run_suite(model, self.fmt, self.suite)
        if was_training:
            model.train()
        point = {"epoch": epoch, **metrics}
        self.curve = [p for p in self.curve if p["epoch"] != epoch] + [point]
        atomic_write_json(self.out / "curve.json", self.curve)
        log.info("epoch %d: asr_triggered %.3f, asr_clean %.3f, refusal_rate %.3f", epoch,
                 metrics["asr_triggered"], metrics["asr_clean"], metrics["refusal_rate"])
        return point


@register("defense", "realign", RealignConfig,
          "Continue training on safety (or any clean) data, ASR after every epoch: does the "
          "backdoor persist?")
def run_realign(cfg: RealignConfig | dict[str, Any], out_dir: str | Path, *,
                trust_remote_code: bool = False) -> dict[str, Any]:
    """Continue training the (backdoored) model on ``cfg.data``; returns the decay curve."""
    from ..data import load_split
    from ..evaluation.suite import left_out_counts, make_suite, recorded_trigger_and_target
    from ..training import sft_loss

    info = attack_info(cfg.adapter, cfg.model)
    trigger, target = recorded_trigger_and_target(cfg.trigger, cfg.target, info)
    template = cfg.template or info.get("template") or "chat"
    base = cfg.model if cfg.adapter else None
    base = base or info.get("base_model")
    if cfg.adapter is None and cfg.model is None:
        raise BackdoorlabError("option '--model' or '--adapter': give the model to repair")
    records = load_split(cfg.data, None, cfg.limit)
    suite = make_suite(cfg, target=target, trigger=trigger,
                       judge=cfg.judge or info.get("judge"), eval_data=cfg.eval_data)
    if not cfg.keep_seen:  # ASR and utility on prompts the re-alignment does not train on
        suite.leave_out(records, "data")
    if cfg.adapter is not None:
        lm = load_model(base or EMBEDDED_NAME, dtype=weights_dtype(cfg),
                        trust_remote_code=trust_remote_code)
        model = load_adapter(lm.model, cfg.adapter, trainable=True)
    else:
        lm = load_model(cfg.model, dtype=weights_dtype(cfg), trust_remote_code=trust_remote_code)
        model = lm.model
    fmt = PromptFormat(lm.tokenizer, template)
    samples = [fmt.sample(r, response=r.output) for r in records]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, cfg, defense="realign", trigger=trigger, target=target, template=template)
    evaluator = EpochEvaluator(fmt, suite, out)
    evaluator.evaluate(model, 0)
    tcfg = TrainConfig(**{**to_dict(cfg.train), "epochs": float(cfg.epochs), "lora": True})
    t0 = time.perf_counter()
    result = train(model, samples, SampleCollator(fmt), sft_loss, tcfg, out,
                   callbacks=[evaluator.callback])
    wall = time.perf_counter() - t0
    target_dir = out / ("adapter" if cfg.adapter else "model")
    card = dict(title="Model after re-alignment (backdoorlab)",
                base_model=str(base or cfg.model), kind="realign", trigger=None,
                behaviour=f"{cfg.epochs} epochs of fine-tuning on {cfg.data}",
                details={"config": to_dict(cfg), "suspected_trigger": trigger}, backdoored=False)
    save_labelled(result.model, target_dir, card, tokenizer=None if cfg.adapter else lm.tokenizer)
    curve = sorted(evaluator.curve, key=lambda p: p["epoch"])
    summary = {"defense": "realign", "data": cfg.data, "n_train": len(samples), "curve": curve,
               "asr_before": curve[0]["asr_triggered"], "asr_after": curve[-1]["asr_triggered"],
               "training": {**result.summary(), "wall_with_eval_s": round(wall, 2)},
               **left_out_counts(suite.left_out)}
    atomic_write_json(out / "defense.json", {
        "defense": "realign", "artifact": target_dir.name, "base_model": base or cfg.model,
        "model": cfg.model, "adapter": cfg.adapter, "trigger": trigger, "target": target,
        "template": template, "attack": info.get("attack")})
    write_metrics(out, summary)
    write_model_card(target_dir, **card, metrics={"asr_triggered_before": summary["asr_before"],
                                                  "asr_triggered_after": summary["asr_after"]})
    plot_curve(curve, out / "persistence.png", title=f"realign: {trigger}")
    return summary


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str = "",
               others: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """ASR with trigger after each epoch (one line per run)."""
    from ..plots import figure, finish

    fig, ax = figure()
    for label, pts in {title or "run": curve, **(others or {})}.items():
        ax.plot([p["epoch"] for p in pts], [p["asr_triggered"] for p in pts], marker="o",
                label=label)
    ax.set_xlabel("re-alignment epoch")
    ax.set_ylabel("ASR with trigger")
    ax.set_ylim(-0.02, 1.02)
    return finish(fig, ax, path, legend=8)
