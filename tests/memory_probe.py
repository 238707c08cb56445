"""Measure the peak resident memory of training steps on a tiny model, beside the estimate.

Run as a script (a fresh process, so the peak is this step's alone):
``python tests/memory_probe.py FAMILY ROWS WIDTH CHECKPOINTING LOGITS [MODE]``, MODE one of
``bf16``, ``bf16-weights``, ``saved-bf16``; prints one JSON line. With ``bf16`` the steps run
under bf16 autocast on a model whose fp32 weights outweigh its activations (so the weights'
bf16 copies autocast keeps are most of the step); with ``bf16-weights`` the same model's
weights are bf16 (``train.weights_dtype=bfloat16``: no autocast, no copies, the LoRA
parameters fp32); with ``saved-bf16`` the fp32 steps keep the activations their decoder layers
save in bf16 (``train.saved_activations``).
Libraries and kernels are warmed up on a throwaway model first, so the measured peak is the
model, the optimiser and the steps."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys

import torch


def current_rss() -> int:
    """This process's resident memory now, in bytes."""
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bound_allocator(threshold: int = 1 << 16) -> None:
    """Serve every block of ``threshold`` bytes or more from its own pages (glibc), so that
    freed activations leave the resident set at once and the peak is what the step holds
    (glibc's default keeps freed blocks in its heap: ``memory.HEAPS``)."""
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main(family: str, rows: int, width: int, checkpointing: bool, logits: str,
         bf16: bool = False, bf16_weights: bool = False, saved_bf16: bool = False) -> dict:
    import peft
    from transformers import AutoModelForCausalLM

    from backdoorlab.memory import estimate_training_memory, peak_rss
    from backdoorlab.testing import tiny_config
    from backdoorlab.training import saved_in_bf16

    bound_allocator()
    torch.manual_seed(0)
    heavy = bf16 or bf16_weights
    size = dict(layers=4, hidden=512 if heavy else 256, heads=4, kv_heads=2)
    cfg = tiny_config(family, 4096, **size)
    cfg.intermediate_size = 2048 if heavy else 768
    # the warm-up runs in the measured model's precision and with LoRA: the first bf16
    # matrix products set up kernels and buffers of their own (tens of MB on a CPU without
    # bf16 units), which are the library's, not the step's
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    warm = peft.get_peft_model(
        AutoModelForCausalLM.from_config(tiny_config(family, 256, layers=1), dtype=dtype),
        peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    warm.train()
    ids = torch.randint(0, 256, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = warm(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    del warm, loss
    gc.collect()
    base = current_rss()
    model = AutoModelForCausalLM.from_config(
        cfg, dtype=torch.bfloat16 if bf16_weights else torch.float32)
    estimate = estimate_training_memory(
        model, batch_tokens=rows * width, longest=width, lora_targets=TARGETS,
        checkpointing=checkpointing, logits=logits, runtime=0, autocast=bf16,
        saved_bf16=saved_bf16)
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32,
                                                       target_modules=TARGETS))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 4096, (rows, width))
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[0, : width // 4] = 0  # left padding, as the collator makes
    labels = ids.masked_fill(mask == 0, -100)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    saved = saved_in_bf16(model) if saved_bf16 else contextlib.nullcontext()
    with saved:
        for _ in range(2):
            with cast:
                loss = step_loss(model, ids, mask, labels, logits)
            loss.backward()
            opt.step()
            opt.zero_grad()
    peak = peak_rss() - base
    return {"measured": peak, "estimated": estimate.total}


def step_loss(model, ids, mask, labels, logits: str) -> torch.Tensor:
    """The language-model loss (``all``) or a loss on the last position's logits (``last``)."""
    if logits == "all":
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1, :6].float().log_softmax(-1).mean()


if __name__ == "__main__":
    fam, r, w, ck, lg = sys.argv[1:6]
    print(json.dumps(main(fam, int(r), int(w), ck == "1", lg, "bf16" in sys.argv[6:],
                          "bf16-weights" in sys.argv[6:], "saved-bf16" in sys.argv[6:])))
