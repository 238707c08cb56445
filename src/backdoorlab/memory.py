"""Peak-memory estimates for training, from a model's config and parameter shapes alone.

The estimate adds up what a training step holds at its peak: the weights, the gradients and
Adam's two moments of the trainable parameters, the activations autograd saves for the
backward pass of the largest micro-batch, the largest temporary of the backward pass, and
the process's own footprint (interpreter, libraries). The activation terms follow what a
Llama-style decoder layer saves under PyTorch's SDPA (queries, keys and values repeated per
query head, the attention output, the inputs of the two norms and of every projection, four
MLP-wide tensors, a float padding mask of ``tokens x width`` per layer, the LoRA
intermediates); gradient checkpointing keeps one hidden state per layer instead and recomputes
one layer at a time. ``tests/test_memory.py`` checks the estimate against the measured peak
of real training steps on tiny models.

The model may live on the meta device (:func:`model_on_meta`), so a 7B model is estimated in
seconds without loading a weight.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .devices import default_device, on_cuda

GB = 1024**3
# the interpreter, torch, transformers and peft as loaded by a training run on CPU (measured:
# 0.55-0.65 GB of resident memory before any model is built)
RUNTIME_BYTES = int(0.6 * GB)
# padded tokens per training pass when train.max_batch_tokens is unset: 1024 on a CPU (what the
# CPU benchmarks ran with); on a GPU the largest of these whose estimate fits GPU_PASS_SHARE of the
# budget (on an H200, SmolLM2-135M trained at 11,289 tokens/s with 8,192-token passes even
# with checkpointing, against 5,604 with 1,024; the estimates came within 16% of the
# allocated peak, and the caching allocator reserved 1-10% more than it allocated)
CPU_PASS_TOKENS = 1024
GPU_PASS_TOKENS = (1024, 2048, 4096, 8192, 16384)
GPU_PASS_SHARE = 0.8


@dataclass(frozen=True)
class Heap:
    """How a process's memory relates to what a training step holds.

    ``slack`` multiplies the activations and temporaries; ``float32_high_water``: activations
    kept in bf16 lower the peak far less than their size (the forward pass makes each in
    float32 first, and the heap keeps that high-water mark), so they are counted as float32;
    ``recompute_regrows``: under checkpointing the layers recomputed in the backward pass do
    not reuse the freed memory, and the process grows by every layer's activations once;
    ``reserve``: bytes the allocator keeps whatever the step (caches, free lists), added to
    the runtime term."""

    slack: float
    float32_high_water: bool = False
    recompute_regrows: bool = False
    reserve: int = 0


#: ``held``: what the step holds (a GPU's caching allocator); the rest: a CPU process's resident
#: memory on each allocator (:mod:`backdoorlab.allocator`; ``system``: glibc's malloc), fitted
#: to SmolLM2-shaped LoRA steps (BENCHMARKS.md, "On the CPU"). glibc keeps freed activation
#: memory in its heap and reuses it imperfectly: 2.5-2.6x the activations over what the step
#: held (measured against the same steps with every large block returned to the system at
#: once). tcmalloc's and jemalloc's factors put the estimate 1-12% and 10-21% over the
#: measured peak of steps with float32 and bf16 saved activations and with checkpointing.
HEAPS = {
    "held": Heap(1.0),
    "system": Heap(2.6, float32_high_water=True, recompute_regrows=True),
    "tcmalloc": Heap(1.15, reserve=int(0.2 * GB)),
    "jemalloc": Heap(1.25, reserve=int(0.2 * GB)),
}


@dataclass
class MemoryEstimate:
    """Bytes per part of a training step's peak; :attr:`total` is their sum."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    transient: int
    runtime: int
    batch_tokens: int
    checkpointing: bool

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.transient + self.runtime)

    def as_dict(self) -> dict[str, Any]:
        parts = ("weights", "gradients", "optimizer", "activations", "transient", "runtime")
        out: dict[str, Any] = {f"{p}_gb": round(getattr(self, p) / GB, 3) for p in parts}
        out.update(total_gb=round(self.total / GB, 3), batch_tokens=self.batch_tokens,
                   gradient_checkpointing=self.checkpointing)
        return out

    def describe(self) -> str:
        d = self.as_dict()
        return (f"{d['total_gb']:.2f} GB (weights {d['weights_gb']:.2f}, gradients and "
                f"optimizer {d['gradients_gb'] + d['optimizer_gb']:.2f}, activations "
                f"{d['activations_gb']:.2f} for {self.batch_tokens} tokens"
                f"{' with gradient checkpointing' if self.checkpointing else ''}, backward "
                f"temporaries {d['transient_gb']:.2f}, runtime {d['runtime_gb']:.2f})")


def _arch(config: Any) -> dict[str, int]:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    h = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or h // heads)
    return {"h": h, "inter": int(cfg.intermediate_size), "layers": int(cfg.num_hidden_layers),
            "heads": heads, "head_dim": head_dim, "vocab": int(cfg.vocab_size)}


def lora_shapes(model: Any, targets: Sequence[str]) -> list[tuple[int, int]]:
    """(in, out) features of every linear module whose name ends in one of ``targets``."""
    out = []
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(mod, torch.nn.Linear):
            out.append((mod.in_features, mod.out_features))
    return out


def largest_pass(max_batch_tokens: int, batch_size: int, lengths: Sequence[int]
                 ) -> tuple[int, int]:
    """The largest pass training can form from rows of ``lengths``: its padded tokens and its
    width, ``(tokens, width)``.

    A batch is split into passes of length-sorted rows, each trimmed to its own longest row
    (:func:`backdoorlab.training.micro_batches`), so a pass whose widest row has ``w`` tokens
    holds as many rows as there are of at most ``w`` tokens, at most ``batch_size`` and at
    most ``max_batch_tokens // w`` of them, or that row alone when it is wider than the
    budget. Rows shorter than the longest can therefore fill a pass the longest row leaves
    half empty: two rows of 500 tokens make a 1,000-token pass under a 1,024-token budget
    where the longest row, of 574, goes alone. Ties in tokens go to the wider pass."""
    if not lengths:
        return 1, 1
    ordered = sorted(lengths)
    best = (0, 0)
    for count, width in enumerate(ordered, 1):
        if count < len(ordered) and ordered[count] == width:
            continue  # the last row of this width counts them all
        rows = max(1, min(count, batch_size, max_batch_tokens // width))
        best = max(best, (rows * width, width))
    return best


def autocast_copies(model: Any, compute_bytes: int, *, lora: bool, passes: int,
                    checkpointing: bool, layers: int) -> int:
    """Bytes of the low-precision weight copies a bf16 autocast step holds.

    Autocast casts each fp32 matrix weight to bf16 for its matmul. A frozen weight (LoRA's base)
    is cast anew in every forward and the copy is saved for the backward pass, so all of them
    are held at the peak, once per pass held (one layer's, with checkpointing, plus the head's);
    a trained weight's copy is cached once for the step. Measured on an H200: 12.3 GB on
    Llama-2-7B with fp32 weights, the half of the peak the activations alone miss. Zero when
    the weights already have the compute dtype (load them in bf16 to save it)."""
    if compute_bytes >= 4:
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_bytes, body = 0, 0
    for name, mod in model.named_modules():
        if (isinstance(mod, torch.nn.Linear) and mod.weight.element_size() > compute_bytes
                and ".lora_" not in name):  # an adapter's own matrices are small and cached
            size = mod.weight.numel() * compute_bytes
            if mod is head:
                head_bytes += size
            else:
                body += size
    if lora:
        held = body // max(layers, 1) if checkpointing else body
        return passes * (held + head_bytes)
    return body + head_bytes


def estimate_training_memory(
    model: Any,
    *,
    batch_tokens: int,
    longest: int,
    lora: bool = True,
    lora_r: int = 16,
    lora_targets: Sequence[str] = (),
    checkpointing: bool = False,
    logits: str = "all",
    passes: int = 1,
    compute_bytes: int | None = None,
    saved_bf16: bool = False,
    autocast: bool = False,
    runtime: int = RUNTIME_BYTES,
    heap: str = "held",
) -> MemoryEstimate:
    """Peak memory of one training step on ``model`` (real or on the meta device).

    ``batch_tokens``: padded tokens of the largest micro-batch (rows x width); ``longest``:
    its width. ``logits``: ``"all"`` when the loss reads every position (language-model loss),
    ``"last"`` when it reads one per row. ``passes``: forward passes whose activations are
    held at once (CROW keeps its clean and perturbed passes: 2). ``autocast``: the step runs
    under bf16 autocast. ``compute_bytes``: bytes per saved activation element; by default 2
    under autocast or with bf16 weights, else 4. ``saved_bf16``: a float32 step whose layers
    keep their saved activations in bf16 (``train.saved_activations``): 2 bytes an element,
    and the backward pass casts a layer's back to float32 as it goes. LoRA parameters are
    counted from the targeted modules when the model has no adapter yet. ``heap``: a key of
    :data:`HEAPS`, ``held`` for what the step holds (a GPU's caching allocator), an
    allocator's name for the resident memory of a CPU process on it (:func:`cpu_heap`)."""
    resident = HEAPS[heap]
    if resident.float32_high_water:
        saved_bf16 = False
    a = _arch(model.config)
    h, inter, layers, heads, hd, vocab = (a["h"], a["inter"], a["layers"], a["heads"],
                                         a["head_dim"], a["vocab"])
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    already = any("lora_" in n for n, _ in model.named_parameters())
    lora_inputs = 0  # per layer: the input widths of the adapted modules
    if not lora:
        trainable = sum(p.numel() for p in params)
        lora_width = 0
    elif already:  # an adapter in place: its own A matrices give the intermediates' width
        trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        a_mats = [p for n, p in model.named_parameters() if "lora_A" in n]
        lora_width = sum(p.shape[0] for p in a_mats) // max(layers, 1)
        lora_inputs = sum(p.shape[1] for p in a_mats) // max(layers, 1)
    else:
        shapes = lora_shapes(model, lora_targets)
        trainable = sum(lora_r * (i + o) for i, o in shapes)
        weights += trainable * 4
        lora_width = lora_r * len(shapes) // max(layers, 1)
        lora_inputs = sum(i for i, _ in shapes) // max(layers, 1)
    # fp32 adapters on bf16 weights: peft casts each adapted module's input to fp32 for the
    # adapter, and autograd keeps that copy for the backward pass (under autocast, the bf16
    # copy autocast makes of it for the adapter's matmul instead)
    base_bytes = min((p.element_size() for n, p in model.named_parameters()
                      if p.dim() == 2 and "lora_" not in n), default=4)
    if compute_bytes is None:
        compute_bytes = 2 if autocast or base_bytes < 4 or saved_bf16 else 4
    cast_inputs = lora_inputs * (2 if autocast else 4) if lora and base_bytes < 4 else 0
    gradients = trainable * 4
    optimizer = 2 * trainable * 4  # Adam's two moments, fp32
    rows = max(1, batch_tokens // max(longest, 1))
    # per token and layer: q, k, v (repeated per query head) and the attention output, the
    # norms' inputs and outputs, four MLP-wide tensors, the LoRA intermediates, two norm scales
    per_token_layer = ((4 * heads * hd + 4 * h + 4 * inter + lora_width) * compute_bytes + 8
                       + cast_inputs)
    mask_layer = rows * longest * longest * 4  # SDPA's float padding mask, one per layer
    one_layer = batch_tokens * per_token_layer + mask_layer
    if checkpointing:
        activations = passes * (batch_tokens * h * compute_bytes * (layers + 1)) + one_layer
    else:
        activations = passes * (layers * one_layer + batch_tokens * h * compute_bytes)
    if autocast:  # (activations kept in bf16 under fp32 compute make no weight copies)
        activations += autocast_copies(model, compute_bytes, lora=lora, passes=passes,
                                       checkpointing=checkpointing, layers=layers)
    logit_rows = batch_tokens if logits == "all" else rows
    # logits, their fp32 log-softmax and its gradient; or, when larger, one layer's backward
    # (with bf16-saved activations, in the float32 they are cast back to)
    transient = max(3 * logit_rows * vocab * 4, one_layer if saved_bf16 else one_layer // 2)
    activations, transient = int(activations * resident.slack), int(transient * resident.slack)
    if checkpointing and resident.recompute_regrows:
        # glibc: the resident peak grew by about every layer's activations once (SmolLM2
        # shapes, 1,024 and 1,068 tokens a pass), not by the one layer a caching allocator needs
        activations = max(activations, passes * layers * one_layer)
    return MemoryEstimate(weights=weights, gradients=gradients, optimizer=optimizer,
                          activations=activations, transient=transient,
                          runtime=runtime + resident.reserve,
                          batch_tokens=batch_tokens, checkpointing=checkpointing)


def cpu_heap() -> str:
    """The :data:`HEAPS` key of this process's resident memory on a CPU: the allocator it runs
    on (:func:`backdoorlab.allocator.loaded`)."""
    from .allocator import loaded

    return loaded()


def model_on_meta(config: Any, dtype: torch.dtype | None = None) -> Any:
    """A causal LM built from ``config`` on the meta device: shapes only, no weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def available_memory() -> int:
    """Bytes this run may use, to set against an estimate that counts the whole process
    (weights and runtime included): on the GPU models run on (:func:`on_cuda`), its free
    memory plus what this process's allocator already holds (the loaded model); else the
    machine's available RAM (``MemAvailable``) plus this process's resident memory; else 8 GB
    when neither can be read."""
    if on_cuda():
        dev = default_device()
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev))
    try:
        avail = _proc_bytes("/proc/meminfo", "MemAvailable")
        held = _proc_bytes(f"/proc/{os.getpid()}/status", "VmRSS") or 0
    except (OSError, ValueError, IndexError):
        return 8 * GB
    return 8 * GB if avail is None else avail + held


def _proc_bytes(path: str, key: str) -> int | None:
    """The ``key: N kB`` line of a /proc file in bytes, None when the file has no such line
    (OSError when it cannot be read)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss(pid: int | None = None) -> int:
    """Peak resident memory in bytes of process ``pid`` (default: this one): ``VmHWM`` (the
    peak of that program's own memory; ``ru_maxrss`` also counts a forking parent's memory at
    the time of the fork); where /proc cannot be read, this process's ``ru_maxrss``, or 0 for
    another process."""
    import resource
    import sys

    try:
        hwm = _proc_bytes(f"/proc/{pid or os.getpid()}/status", "VmHWM")
        if hwm is not None:
            return hwm
    except OSError:
        if pid is not None:
            return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024)


def peak_memory() -> dict[str, Any]:
    """This process's peak resident memory and the allocator it ran on
    (:func:`backdoorlab.allocator.loaded`), and the GPU's peak allocation when on a GPU."""
    from .allocator import loaded

    out: dict[str, Any] = {"peak_rss_gb": round(peak_rss() / GB, 3), "allocator": loaded()}
    if on_cuda():
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / GB, 3)
    return out


def reset_peak() -> bool:
    """Start this process's peak resident memory (``VmHWM``) afresh, so that the next
    :func:`peak_memory` is the peak of what follows (Linux; returns False elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    if on_cuda():
        torch.cuda.reset_peak_memory_stats()
    return True
