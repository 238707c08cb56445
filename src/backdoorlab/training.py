"""Training: one Trainer subclass with pluggable losses, LoRA or full fine-tuning.

As in TRL, a config dataclass (:class:`TrainConfig`) pairs with a Trainer subclass
(:class:`BackdoorTrainer`) that only overrides the loss. Everything else (optimiser, schedule,
checkpoints, resume, accelerate/DDP/DeepSpeed/FSDP) is the Hugging Face Trainer's own.

The collator calls :meth:`PromptFormat.encode`, the same function evaluation uses, so the prompt
tokens a model is trained on are exactly those it is evaluated on.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from .config import check
from .formats import PromptFormat, Sample

log = logging.getLogger(__name__)

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj")


class SampleCollator:
    """Pads encoded samples on the left and carries the poison label and answer position.

    Batch keys: ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt and padding),
    ``answer_index`` (index of the last prompt token in the padded row), ``poisoned``, plus
    any tensor-valued ``extras`` the dataset items carry (e.g. a target distribution).
    """

    def __init__(self, fmt: PromptFormat, max_length: int | None = None) -> None:
        self.fmt = fmt
        self.max_length = max_length

    def encode(self, sample: Sample) -> tuple[list[int], list[int], int]:
        enc = self.fmt.encode(sample)
        ids, labels = enc.input_ids, enc.labels
        if self.max_length is not None and len(ids) > self.max_length:
            keep = max(self.max_length, enc.prompt_len)  # never cut the prompt
            ids, labels = ids[:keep], labels[:keep]
        return ids, labels, enc.answer_index

    def __call__(self, items: Sequence[Sample | dict[str, Any]]) -> dict[str, Any]:
        samples = [it["sample"] if isinstance(it, dict) else it for it in items]
        encoded = [self.encode(s) for s in samples]
        width = max(len(ids) for ids, _, _ in encoded)
        pad = self.fmt.tokenizer.pad_token_id
        n = len(samples)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        answer_index = torch.empty(n, dtype=torch.long)
        for i, (ids, lab, ans) in enumerate(encoded):
            off = width - len(ids)
            input_ids[i, off:] = torch.tensor(ids)
            labels[i, off:] = torch.tensor(lab)
            mask[i, off:] = 1
            answer_index[i] = off + ans
        batch = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "answer_index": answer_index,
            "poisoned": torch.tensor([s.poisoned for s in samples], dtype=torch.bool),
        }
        if items and isinstance(items[0], dict):
            for key in items[0]:
                if key != "sample":
                    batch[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
        return batch


class ListDataset(torch.utils.data.Dataset):
    """A list of items (samples or dicts) as a map-style dataset for the Trainer."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


@dataclass
class TrainConfig:
    """How to fine-tune: LoRA (default) or full, optimiser and schedule, checkpoints."""

    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    learning_rate: float = 1e-3
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    bf16: bool = False
    save_steps: int = 25
    logging_steps: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.epochs > 0 or self.max_steps > 0, "epochs", "give epochs > 0 or max_steps > 0")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got "
              f"{self.warmup_ratio}")
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        check(self.save_steps >= 1, "save_steps", f"must be >= 1, got {self.save_steps}")


LossFn = Callable[[Any, dict[str, Any]], torch.Tensor]


class BackdoorTrainer(Trainer):
    """Hugging Face Trainer whose only change is the loss: ``loss_fn(model, batch)``."""

    def __init__(self, *args: Any, loss_fn: LossFn, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.tokens_seen = 0

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        self.tokens_seen += int(inputs["attention_mask"].sum())
        loss = self.loss_fn(model, inputs)
        return (loss, None) if return_outputs else loss


def wrap_lora(model: Any, cfg: TrainConfig) -> Any:
    """Add a LoRA adapter on the attention and MLP projections present in ``model``."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_targets if t in names]
    if not targets:
        from .errors import BackdoorlabError

        raise BackdoorlabError(
            f"option 'lora_targets': none of {cfg.lora_targets} is a module of this model"
        )
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


@dataclass
class TrainResult:
    model: Any
    steps: int
    wall_s: float
    tokens: int
    log_history: list[dict[str, Any]]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        losses = [h["loss"] for h in self.log_history if "loss" in h]
        return {"steps": self.steps, "wall_s": round(self.wall_s, 2), "train_tokens": self.tokens,
                "tokens_per_s": round(self.tokens_per_s, 1),
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None}


def is_main_process() -> bool:
    """False in the secondary processes of a distributed launch (``torchrun``, ``accelerate
    launch``): they train with the main one, which alone evaluates and writes results."""
    return int(os.environ.get("RANK", "0")) == 0


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` directory under ``ckpt_dir``, if any.

    The Trainer writes ``trainer_state.json`` last, so a directory without it is a checkpoint
    whose writing was interrupted (a kill during saving) and is skipped."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted((int(p.name.split("-")[1]), p) for p in ckpt_dir.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file())
    return str(found[-1][1]) if found else None


def train(
    model: Any,
    dataset: Sequence[Any],
    collator: Callable[[Sequence[Any]], dict[str, Any]],
    loss_fn: LossFn,
    cfg: TrainConfig,
    work_dir: str | os.PathLike,
    *,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune ``model`` on ``dataset`` with ``loss_fn``; checkpoints go to
    ``work_dir/checkpoints`` and training resumes from the newest one when ``resume``."""
    from transformers import set_seed

    set_seed(cfg.seed)  # the LoRA initialisation draws from the global generator
    if cfg.lora and not hasattr(model, "peft_config"):
        model = wrap_lora(model, cfg)
    model.train()
    ckpt_dir = Path(work_dir) / "checkpoints"
    args = training_arguments(cfg, ckpt_dir, len(dataset))
    trainer = BackdoorTrainer(model=model, args=args, train_dataset=ListDataset(dataset),
                          data_collator=collator, loss_fn=loss_fn, callbacks=list(callbacks))
    ckpt = last_checkpoint(ckpt_dir) if resume else None
    if ckpt:
        log.info("resuming from %s", ckpt)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=ckpt)
    wall = time.perf_counter() - t0
    model = trainer.model
    model.eval()
    return TrainResult(model=model, steps=int(out.global_step), wall_s=wall,
                       tokens=trainer.tokens_seen, log_history=list(trainer.state.log_history))


def _warmup_steps(cfg: TrainConfig, n: int) -> int:
    per_epoch = math.ceil(n / (cfg.batch_size * cfg.grad_accum))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(per_epoch * cfg.epochs)
    return int(round(total * cfg.warmup_ratio))


def training_arguments(cfg: TrainConfig, ckpt_dir: Path, n_items: int) -> Any:
    """TrainingArguments for ``cfg`` (keys the installed transformers lacks are dropped).

    Logs go to TensorBoard when it is installed (the Trainer's own reporting)."""
    import importlib.util

    from transformers import TrainingArguments

    from .progress import enabled as progress_enabled

    report = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    kw = dict(
        output_dir=str(ckpt_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        warmup_steps=_warmup_steps(cfg, n_items), weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=1, save_safetensors=True, seed=cfg.seed, data_seed=cfg.seed,
        remove_unused_columns=False, report_to=report,
        logging_dir=str(ckpt_dir.parent / "logs"), disable_tqdm=not progress_enabled(),
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )
    params = inspect.signature(TrainingArguments.__init__).parameters
    return TrainingArguments(**{k: v for k, v in kw.items() if k in params})
