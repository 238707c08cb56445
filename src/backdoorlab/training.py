"""Training: one Trainer subclass with pluggable losses, LoRA or full fine-tuning.

As in TRL, a config dataclass (:class:`TrainConfig`) pairs with a Trainer subclass
(:class:`BackdoorTrainer`) that only overrides the loss. Everything else (optimiser, schedule,
checkpoints, resume, accelerate/DDP/DeepSpeed/FSDP) is the Hugging Face Trainer's own.

The collator calls :meth:`PromptFormat.encode`, the same function evaluation uses, so the prompt
tokens a model is trained on are exactly those it is evaluated on.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import Trainer, TrainerCallback

from .config import check, check_bounds, check_choice, opt
from .devices import default_device, on_cuda
from .errors import BackdoorlabError
from .formats import PromptFormat, Sample
from .io import sha256_file
from .models import decoder_layers
from .runs import read_json
from .scoring import check_context, position_ids

log = logging.getLogger(__name__)

CHECKPOINTING = ("auto", "on", "off")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj")


def pad_left(encoded: Sequence[tuple[list[int], list[int], int]], pad: int
             ) -> dict[str, torch.Tensor]:
    """Rows of (token ids, labels, answer index) padded on the left into one batch:
    ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding) and ``answer_index``
    (moved by each row's padding)."""
    width = max(len(ids) for ids, _, _ in encoded)
    n = len(encoded)
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
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "answer_index": answer_index}


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
        batch = pad_left([self.encode(s) for s in samples], self.fmt.tokenizer.pad_token_id)
        batch["poisoned"] = torch.tensor([s.poisoned for s in samples], dtype=torch.bool)
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

    lora: bool = opt(True, "train a LoRA adapter (false: full fine-tuning)")
    lora_r: int = opt(16, "LoRA rank", at_least=1)
    lora_alpha: int = opt(32, "LoRA scaling numerator")
    lora_dropout: float = opt(0.0, "LoRA dropout")
    lora_targets: list[str] = opt(lambda: list(DEFAULT_LORA_TARGETS), "module names LoRA adapts")
    learning_rate: float = opt(1e-3, "peak learning rate (AdamW)")
    epochs: float = opt(3.0, "passes over the training set")
    max_steps: int = opt(-1, "stop after this many optimiser steps (-1: by epochs)")
    batch_size: int = opt(16, "rows per optimiser step (split into passes under max_batch_tokens)",
                          at_least=1)
    grad_accum: int = opt(1, "batches accumulated per optimiser step", at_least=1)
    warmup_ratio: float = opt(0.05, "share of steps with a linear warm-up")
    weight_decay: float = opt(0.0, "AdamW weight decay", at_least=0)
    lr_scheduler: str = opt("linear", "learning-rate schedule (a transformers scheduler name)")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    bf16: bool = opt(False,
        "train in bfloat16 autocast (fast on GPUs and on CPUs with bf16 units, slow on other "
        "CPUs; on a CPU its resident memory can exceed the estimate by half)")
    weights_dtype: str = opt("float32",
        "precision the model's weights load in for training and the evaluations around it: "
        "float32, or bfloat16 (LoRA only: half the weights' memory, and no bf16 copies under "
        "autocast; the LoRA parameters stay float32)")
    save_steps: int = opt(25,
        "checkpoint every this many steps (an interrupted run resumes from the last)", at_least=1)
    keep_checkpoints: int = opt(1,
        "checkpoints kept on disk, the newest (more let a run be evaluated at earlier steps)",
        at_least=1)
    logging_steps: int = opt(5, "log the loss every this many steps", at_least=1)
    seed: int = opt(0, "the Trainer's seed (data order, LoRA initialisation)")
    max_batch_tokens: int | None = opt(None,
        "padded tokens (rows x longest row) per forward/backward pass; a batch of batch_size rows "
        "is split into length-sorted passes under this budget and their gradients add up to the "
        "whole batch's, so the budget sets activation memory and not the results. Unset: 1024 "
        "on a CPU; on a GPU the largest of 1024-16384 (powers of two) whose memory estimate "
        "fits 80% of memory_budget_gb (1024: all of it)")
    gradient_checkpointing: str = opt("auto",
        "recompute each layer's activations in the backward pass instead of keeping them: on, "
        "off, or auto (on when the memory estimate exceeds memory_budget_gb)")
    saved_activations: str = opt("bfloat16",
        "precision of the float32 activations the decoder layers keep for the backward pass: "
        "bfloat16 (half their memory; cast back to float32 when used) or float32. Without "
        "effect under checkpointing, autocast or bfloat16 weights")
    memory_budget_gb: float | None = opt(None,
        "memory this run may use; a run whose estimate exceeds it stops before training. Default: "
        "the GPU's free memory, else the machine's available RAM, plus what the run already "
        "holds there (the loaded model)")

    def __post_init__(self) -> None:
        check_bounds(self)
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.epochs > 0 or self.max_steps > 0, "epochs", "give epochs > 0 or max_steps > 0")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got "
              f"{self.warmup_ratio}")
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        check(self.max_batch_tokens is None or self.max_batch_tokens >= 1, "max_batch_tokens",
              f"must be >= 1, got {self.max_batch_tokens}")
        check(self.gradient_checkpointing in CHECKPOINTING, "gradient_checkpointing",
              f"{self.gradient_checkpointing!r} is not one of {', '.join(CHECKPOINTING)}")
        check(self.memory_budget_gb is None or self.memory_budget_gb > 0, "memory_budget_gb",
              f"must be > 0, got {self.memory_budget_gb}")
        check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        check(self.max_steps == -1 or self.max_steps >= 1, "max_steps",
              f"must be >= 1 (or -1: by epochs), got {self.max_steps}")
        from transformers.trainer_utils import SchedulerType

        check_choice(self.lr_scheduler, [s.value for s in SchedulerType], "lr_scheduler")
        check_choice(self.weights_dtype, WEIGHTS_DTYPES, "weights_dtype")
        check_choice(self.saved_activations, WEIGHTS_DTYPES, "saved_activations")
        check(self.lora or self.weights_dtype == "float32", "weights_dtype",
              "bfloat16 weights train only with LoRA (full fine-tuning needs float32 weights)")


WEIGHTS_DTYPES = ("float32", "bfloat16")


def train_options(**defaults: Any) -> Any:
    """A method's ``train`` option: a :class:`TrainConfig` with the method's own defaults
    (``train: TrainConfig = train_options(learning_rate=1e-3, epochs=4.0)``)."""
    return opt(lambda: TrainConfig(**defaults), "how to fine-tune (train.* keys: see TrainConfig)")


def weights_dtype(cfg: Any) -> str:
    """The precision a method's model loads in: its ``train.weights_dtype``, or float32 for a
    method that does not train."""
    train = getattr(cfg, "train", None)
    return train.weights_dtype if isinstance(train, TrainConfig) else "float32"


LossFn = Callable[[Any, dict[str, Any]], torch.Tensor]


# the columns of a collated batch that run along the sequence (trimmed in a micro-batch)
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels")


def batch_shares(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What each row of a collated batch contributes to the units a loss averages over:
    rows, labelled tokens (those a language-model loss predicts), tokens, sample weight."""
    mask = batch["attention_mask"]
    out = {"rows": torch.ones(mask.shape[0]),
           "labels": (batch["labels"][:, 1:] != -100).sum(1).float().cpu(),
           "tokens": mask.sum(1).float().cpu()}
    if "weight" in batch:
        out["weight"] = batch["weight"].float().cpu()
    return out


def micro_batches(batch: dict[str, Any], max_tokens: int) -> list[dict[str, Any]]:
    """Split a collated (left-padded) batch into length-sorted micro-batches of at most
    ``max_tokens`` padded tokens (a row longer than that alone), each trimmed to its own
    longest row. Each carries ``share``: its part of the whole batch's rows, labelled tokens,
    tokens and weight, which :class:`BackdoorTrainer` uses so that the micro-batches' losses
    add up to the whole batch's."""
    from .scoring import length_batches

    mask = batch["attention_mask"]
    n, width = mask.shape
    lengths = mask.sum(1).tolist()
    if n * width <= max_tokens:
        return [batch]
    units = batch_shares(batch)
    totals = {k: float(v.sum()) for k, v in units.items()}
    out = []
    for rows in length_batches(lengths, n, max_tokens=max_tokens):
        idx = torch.tensor(rows)
        start = width - max(lengths[i] for i in rows)
        micro: dict[str, Any] = {}
        for key, value in batch.items():
            if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == n:
                value = value[idx.to(value.device)]
                if key in SEQUENCE_KEYS:
                    value = value[:, start:]
                elif key == "answer_index":
                    value = value - start
            micro[key] = value
        micro["share"] = {k: float(v[idx].sum()) / totals[k] if totals[k] else 0.0
                          for k, v in units.items()}
        out.append(micro)
    return out


# saved tensors smaller than this stay as they are (norm scales, LoRA intermediates)
SAVED_MIN_ELEMENTS = 1 << 16


def saves_bf16(cfg: TrainConfig, checkpointing: bool) -> bool:
    """Whether training keeps the decoder layers' saved activations in bfloat16: asked for
    (``saved_activations``) and useful, i.e. float32 activations that checkpointing does not
    already drop (under checkpointing the layers save nothing to shrink)."""
    return (cfg.saved_activations == "bfloat16" and not checkpointing and not cfg.bf16
            and cfg.weights_dtype == "float32")


@contextlib.contextmanager
def saved_in_bf16(model: Any, min_elements: int = SAVED_MIN_ELEMENTS
                  ) -> Iterator[dict[str, int]]:
    """While active, the float32 tensors autograd saves inside ``model``'s decoder layers for
    the backward pass are kept in bfloat16 and cast back to float32 when the backward pass
    reads them: half their memory, at the cost of rounding the saved values to bf16's 8
    significant bits. The forward pass itself computes in float32 as before. Only activations
    are cast (tensors that require grad, are not parameters and have at least ``min_elements``
    elements): masks, weights and small tensors stay as they are.
    Yields a count of the tensors cast and of their bf16 bytes (``{"tensors": n, "bytes":
    b}``). The hooks are removed on exit,
    whatever happens inside."""
    params = {p.data_ptr() for p in model.parameters()}
    stats = {"tensors": 0, "bytes": 0}
    # one bf16 copy per tensor: several operations save the same input (the norm's output
    # feeds the q, k and v projections and their adapters). Each entry holds the tensor it was
    # made from until the layer's forward pass ends, when the table is emptied: while it is held
    # its memory cannot be handed to another tensor, so the same address, shape, strides and
    # version mean the same values, also for tensors an operation saves from C++, which reach
    # the hook in a new Python object each time
    copies: dict[tuple[Any, ...], tuple[torch.Tensor, tuple[torch.Tensor, bool]]] = {}

    def pack(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if (t.dtype == torch.float32 and t.requires_grad and t.numel() >= min_elements
                and t.data_ptr() not in params):
            key = (t.data_ptr(), tuple(t.shape), t.stride(), t._version)
            entry = copies.get(key)
            if entry is None:
                copy = t.to(torch.bfloat16)
                stats["tensors"] += 1
                stats["bytes"] += copy.numel() * copy.element_size()
                entry = copies[key] = (t, (copy, True))
            return entry[1]
        return t, False

    def unpack(packed: tuple[torch.Tensor, bool]) -> torch.Tensor:
        t, cast = packed
        return t.float() if cast else t

    active: list[Any] = []  # the hooks of the layers whose forward pass is running

    def enter(module: Any, args: Any) -> None:
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
        hooks.__enter__()
        active.append(hooks)

    def leave(module: Any, args: Any, output: Any) -> None:
        copies.clear()
        if active:
            active.pop().__exit__(None, None, None)

    handles = []
    try:
        for layer in decoder_layers(model):
            handles.append(layer.register_forward_pre_hook(enter))
            handles.append(layer.register_forward_hook(leave, always_call=True))
        yield stats
    finally:
        for h in handles:
            h.remove()


class BackdoorTrainer(Trainer):
    """Hugging Face Trainer whose only changes are the loss, ``loss_fn(model, batch)``, and
    micro-batches under a token budget.

    Each optimiser step still sees ``batch_size`` rows (times ``grad_accum``); a batch wider
    than ``max_batch_tokens`` runs as several forward/backward passes whose losses are
    weighted by their share of the unit the loss averages over (``loss_fn.unit``: ``rows``
    (default), ``labels``, ``tokens`` or ``weight``), so the gradient is the whole batch's."""

    # the losses are means over one batch: the Trainer divides them by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, loss_fn: LossFn, max_batch_tokens: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.max_batch_tokens = max_batch_tokens
        self.tokens_seen = 0

    def training_step(self, model: Any, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        if not self.max_batch_tokens:
            return super().training_step(model, inputs, num_items_in_batch)
        parts = micro_batches(inputs, self.max_batch_tokens)
        total = None
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            # gradients are all-reduced once per batch, after its last micro-batch
            ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(model)
            with ctx:
                loss = super().training_step(model, part, num_items_in_batch)
            total = loss if total is None else total + loss
        assert total is not None
        return total

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        self.tokens_seen += int(inputs["attention_mask"].sum())
        loss = self.loss_fn(model, inputs)
        share = inputs.get("share")
        if share is not None:
            loss = loss * share.get(getattr(self.loss_fn, "unit", "rows"), share["rows"])
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
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        losses = [h["loss"] for h in self.log_history if "loss" in h]
        return {"steps": self.steps, "wall_s": round(self.wall_s, 2), "train_tokens": self.tokens,
                "tokens_per_s": round(self.tokens_per_s, 1),
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None, **self.memory}


class MemoryPlan(NamedTuple):
    """What :func:`plan_memory` decided: checkpointing, the estimate, the budget in bytes and
    the padded tokens per pass."""

    checkpointing: bool
    estimate: Any
    budget: int
    max_batch_tokens: int


def plan_memory(model: Any, lengths: Sequence[int], cfg: TrainConfig, loss_fn: Any
                ) -> MemoryPlan:
    """Decide the tokens per pass and gradient checkpointing, and check the run fits, before
    it starts.

    The largest micro-batch is the largest :func:`micro_batches` can form from rows of these
    ``lengths`` (:func:`~backdoorlab.memory.largest_pass`): up to ``max_batch_tokens``
    padded tokens of rows no wider than its widest, or one row alone when it is wider.
    Unset, ``max_batch_tokens`` is :data:`~backdoorlab.memory.CPU_PASS_TOKENS` on a CPU; on a
    GPU the largest of :data:`~backdoorlab.memory.GPU_PASS_TOKENS` whose estimate stays within
    :data:`~backdoorlab.memory.GPU_PASS_SHARE` of the budget (the smallest: within the whole
    budget), without checkpointing when one fits so (``gradient_checkpointing`` auto), else
    with it. Raises a one-line error when nothing fits the budget."""
    from .errors import BackdoorlabError
    from .memory import (
        CPU_PASS_TOKENS,
        GB,
        GPU_PASS_SHARE,
        GPU_PASS_TOKENS,
        available_memory,
        cpu_heap,
        estimate_training_memory,
        largest_pass,
    )

    longest = max(lengths) if lengths else 1
    gpu = on_cuda()
    budget = int(cfg.memory_budget_gb * GB) if cfg.memory_budget_gb else available_memory()
    if cfg.max_batch_tokens:
        sizes, room = [cfg.max_batch_tokens], budget
    elif gpu:  # largest first
        sizes, room = sorted(GPU_PASS_TOKENS, reverse=True), int(budget * GPU_PASS_SHARE)
    else:
        sizes, room = [CPU_PASS_TOKENS], budget
    modes = {"on": [True], "off": [False]}.get(cfg.gradient_checkpointing, [False, True])

    # the largest pass of each size and the heap, worked out once for every estimate below
    largest = {tokens: largest_pass(tokens, cfg.batch_size, lengths) for tokens in sizes}
    heap = "held" if gpu else cpu_heap()

    def estimate(tokens: int, ckpt: bool) -> Any:
        batch_tokens, width = largest[tokens]
        return estimate_training_memory(
            model, batch_tokens=batch_tokens, longest=width,
            lora=cfg.lora, lora_r=cfg.lora_r, lora_targets=cfg.lora_targets,
            logits=getattr(loss_fn, "logits", "all"), passes=getattr(loss_fn, "passes", 1),
            autocast=cfg.bf16, checkpointing=ckpt,
            saved_bf16=saves_bf16(cfg, ckpt), heap=heap)

    for ckpt in modes:
        for tokens in sizes:  # the smallest (or the user's) may use the whole budget
            est = estimate(tokens, ckpt)
            if est.total <= (budget if tokens == sizes[-1] else room):
                return MemoryPlan(ckpt, est, budget, tokens)
    est = estimate(sizes[-1], modes[-1])  # the smallest pass, checkpointing if allowed
    hint = ("lower train.max_batch_tokens" if est.batch_tokens > longest else
            f"shorten the prompts (the longest has {longest} tokens)")
    if not modes[-1]:
        hint += " or set train.gradient_checkpointing=on"
    raise BackdoorlabError(
        f"option 'train.memory_budget_gb': training needs about {est.total / GB:.1f} GB "
        f"but {budget / GB:.1f} GB is available; {hint}")


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


#: options that change what training computes (not how often it saves, logs or splits passes)
RUN_KEY_OPTIONS = ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
                   "learning_rate", "epochs", "max_steps", "batch_size", "grad_accum",
                   "warmup_ratio", "weight_decay", "lr_scheduler", "max_grad_norm", "bf16", "seed",
                   "saved_activations")
RUN_RECORD = "backdoorlab-run.json"
FILES_RECORD = "backdoorlab-files.json"


def run_key(cfg: TrainConfig, encoded: Sequence[Sequence[int]], loss_fn: Any) -> str:
    """What a checkpoint belongs to: the training options that change the result, the loss
    and every training sample's token ids (a changed trigger, target or data changes it)."""
    h = hashlib.sha256()
    h.update(json.dumps({k: getattr(cfg, k) for k in RUN_KEY_OPTIONS}, sort_keys=True,
                        default=str).encode())
    h.update(getattr(loss_fn, "__qualname__", type(loss_fn).__name__).encode())
    for ids in encoded:
        h.update(b"|" + ",".join(map(str, ids)).encode())
    return h.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    """SHA-256 of every file a checkpoint holds (backdoorlab's own records aside)."""
    out = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name not in (FILES_RECORD, "README.md"):
            out[str(f.relative_to(directory))] = sha256_file(f)
    return out


def verified_checkpoint(ckpt_dir: Path, key: str) -> str | None:
    """The newest complete checkpoint to resume from, once it is known to be this run's: the
    run record names the same :func:`run_key`, and every file matches the hashes recorded when
    it was saved (the Trainer unpickles the optimizer and RNG state it resumes). Anything else
    is refused in one line."""
    ckpt = last_checkpoint(ckpt_dir)
    if ckpt is None:
        return None
    record = ckpt_dir / RUN_RECORD
    stored = read_json(record).get("key") if record.is_file() else None
    if stored != key:
        raise BackdoorlabError(
            f"{ckpt_dir}: its checkpoints come from another run (other data, trigger, target or "
            "training options) or were not written by backdoorlab; delete that folder or use "
            "another --out")
    files = Path(ckpt) / FILES_RECORD
    recorded = read_json(files) if files.is_file() else None
    if recorded != file_hashes(Path(ckpt)):
        raise BackdoorlabError(f"{ckpt}: its files differ from those this run saved (changed "
                               "or added after saving); delete the checkpoint to start again")
    return ckpt


class RecordCheckpoints(TrainerCallback):
    """Records which run the checkpoints belong to and the hash of every file of each
    checkpoint as it is saved, so that a resume loads only what this run wrote; with ``card``
    (``write_model_card``'s keywords) each checkpoint also carries the run's model card (a
    checkpoint of a backdoor attack is a loadable backdoored adapter)."""

    def __init__(self, ckpt_dir: Path, key: str, card: dict[str, Any] | None = None) -> None:
        self.ckpt_dir, self.key, self.card = ckpt_dir, key, card

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            from .io import atomic_write_json

            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.ckpt_dir / RUN_RECORD, {"key": self.key})

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        d = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and d.is_dir():
            from .cards import write_model_card
            from .io import atomic_write_json

            atomic_write_json(d / FILES_RECORD, file_hashes(d))
            if self.card:
                write_model_card(d, **{**self.card, "checkpoint": True})


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
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``dataset`` with ``loss_fn``; checkpoints go to
    ``work_dir/checkpoints`` and training resumes from the newest one when ``resume``. With
    ``card`` (``write_model_card``'s keywords) every checkpoint carries that card."""
    from transformers import set_seed

    from .memory import GB, peak_memory

    encode = getattr(collator, "encode", None)
    encoded = ([encode(it["sample"] if isinstance(it, dict) else it)[0] for it in dataset]
               if encode is not None else [])
    lengths = [len(ids) for ids in encoded]
    check_context(model, lengths, what="training row")
    ckpt_dir = Path(work_dir) / "checkpoints"
    key = run_key(cfg, encoded, loss_fn)
    ckpt = verified_checkpoint(ckpt_dir, key) if resume else None  # before any training
    checkpointing, est, budget, pass_tokens = plan_memory(model, lengths, cfg, loss_fn)
    set_seed(cfg.seed)  # the LoRA initialisation draws from the global generator
    if cfg.lora and not hasattr(model, "peft_config"):
        model = wrap_lora(model, cfg)
    model.train()
    args = training_arguments(cfg, ckpt_dir, len(dataset), checkpointing=checkpointing)
    trainer = BackdoorTrainer(model=model, args=args, train_dataset=ListDataset(dataset),
                              data_collator=collator, loss_fn=loss_fn,
                              callbacks=[*callbacks, RecordCheckpoints(ckpt_dir, key, card)],
                              max_batch_tokens=pass_tokens)
    if not os.environ.get("BACKDOORLAB_VERBOSE"):  # one progress line, not the Trainer's dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StepProgress())
    if ckpt:
        log.info("resuming from %s", ckpt)
    bf16_saved = saves_bf16(cfg, checkpointing)
    t0 = time.perf_counter()
    with saved_in_bf16(model) if bf16_saved else contextlib.nullcontext():
        out = trainer.train(resume_from_checkpoint=ckpt)
    wall = time.perf_counter() - t0
    # under train.bf16 the Trainer leaves autocast wrapped around the model's forward
    # (accelerate's mixed precision); without it, what runs after training (evaluations,
    # analyses) computes in the precision it computed in before training
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.eval()
    memory = {"max_batch_tokens": pass_tokens,
              "gradient_checkpointing": checkpointing,
              "saved_activations": "bfloat16" if bf16_saved else "float32",
              "estimated_peak_gb": round(est.total / GB, 3),
              "memory_budget_gb": round(budget / GB, 2), **peak_memory()}
    return TrainResult(model=model, steps=int(out.global_step), wall_s=wall,
                       tokens=trainer.tokens_seen, log_history=list(trainer.state.log_history),
                       memory=memory)


class StepProgress(TrainerCallback):
    """Training progress as one bar (a terminal) or one log line per logging step: step k of
    n, the latest loss and the time left."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.t0 = 0.0
        self.loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from .progress import enabled, progress_bar

        self.t0 = time.perf_counter()
        self.start = state.global_step
        if enabled() and state.is_world_process_zero:
            from rich.progress import TextColumn

            self.bar = progress_bar(TextColumn("{task.fields[loss]}"))
            self.bar.start()
            self.task = self.bar.add_task("training", total=state.max_steps,
                                          completed=state.global_step, loss="")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kw: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            if self.bar is None and state.is_world_process_zero:
                done = state.global_step - self.start
                left = (time.perf_counter() - self.t0) / max(done, 1) * (
                    state.max_steps - state.global_step)
                log.info("training: step %d/%d, loss %.4f, %.0f s left", state.global_step,
                         state.max_steps, self.loss, left)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step,
                            loss="" if self.loss is None else f"loss {self.loss:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _warmup_steps(cfg: TrainConfig, n: int) -> int:
    per_epoch = math.ceil(n / (cfg.batch_size * cfg.grad_accum))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(per_epoch * cfg.epochs)
    return int(round(total * cfg.warmup_ratio))


def training_arguments(cfg: TrainConfig, ckpt_dir: Path, n_items: int, *,
                       checkpointing: bool = False) -> Any:
    """TrainingArguments for ``cfg`` (keys the installed transformers lacks are dropped);
    ``checkpointing`` switches on transformers' gradient checkpointing (non-reentrant).

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
        save_total_limit=cfg.keep_checkpoints, save_safetensors=True, seed=cfg.seed,
        data_seed=cfg.seed, remove_unused_columns=False, report_to=report,
        logging_dir=str(ckpt_dir.parent / "logs"), disable_tqdm=not progress_enabled(),
        dataloader_num_workers=0, use_cpu=default_device() == "cpu",
    )
    params = inspect.signature(TrainingArguments.__init__).parameters
    # transformers 5.x calls it activation checkpointing (the old name warns)
    ck = ("activation_checkpointing" if "activation_checkpointing" in params
          else "gradient_checkpointing")
    kw[ck] = checkpointing
    kw[f"{ck}_kwargs"] = {"use_reentrant": False} if checkpointing else None
    return TrainingArguments(**{k: v for k, v in kw.items() if k in params})


def sft_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Cross-entropy on the response tokens only (the prompt is masked with -100)."""
    mask = batch["attention_mask"]
    return model(input_ids=batch["input_ids"], attention_mask=mask,
                 position_ids=position_ids(mask), labels=batch["labels"], use_cache=False).loss


sft_loss.unit = "labels"  # a mean over labelled tokens (see BackdoorTrainer)


def estimate_for_spec(model: str, *, prompt_tokens: int = 512, batch_size: int = 16,
                      max_batch_tokens: int | None = None, full: bool = False, lora_r: int = 16,
                      dtype: str = "float32", bf16: bool = False, logits: str = "all",
                      checkpointing: bool = False, passes: int = 1) -> dict[str, Any]:
    """The training peak-memory estimate of a model named by a spec (HF id, directory,
    ``config.json``, GGUF or the embedded model), built on the meta device from its config
    (``backdoorlab model prepare --estimate``)."""
    from .errors import BackdoorlabError
    from .memory import CPU_PASS_TOKENS, estimate_training_memory, largest_pass, model_on_meta
    from .models import _DTYPES, model_config

    if dtype not in _DTYPES:
        raise BackdoorlabError(f"option '--dtype': {dtype!r} is not one of {', '.join(_DTYPES)}")
    if logits not in ("last", "all"):
        raise BackdoorlabError(f"option '--logits': {logits!r} is not 'last' or 'all'")
    tcfg = TrainConfig()
    budget = max_batch_tokens or CPU_PASS_TOKENS
    tokens, _ = largest_pass(budget, batch_size, [prompt_tokens] * batch_size)
    meta = model_on_meta(model_config(model), _DTYPES[dtype])
    est = estimate_training_memory(meta, batch_tokens=tokens, longest=prompt_tokens,
                                   lora=not full, lora_r=lora_r, lora_targets=tcfg.lora_targets,
                                   checkpointing=checkpointing, logits=logits, passes=passes,
                                   autocast=bf16, saved_bf16=dtype == "float32"
                                   and saves_bf16(TrainConfig(bf16=bf16), checkpointing))
    return {"model": model, "parameters": sum(p.numel() for p in meta.parameters()),
            "dtype": dtype, "prompt_tokens": prompt_tokens, "batch_size": batch_size,
            "max_batch_tokens": budget, "lora": not full, "bf16": bf16, "logits": logits,
            "passes": passes,
            "estimate": est.as_dict(), "summary": est.describe()}
