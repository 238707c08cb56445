"""Tiny random models for tests and examples, built in-process (no network).

``tiny_model("llama")`` gives a 2-layer model of the chosen family sized for a tokenizer, so the
real tokenizer (and its chat template) can drive a model that runs in milliseconds.
"""

from __future__ import annotations

from typing import Any

import torch

FAMILIES = ("llama", "qwen2", "mistral", "gemma")


def tiny_config(family: str, vocab_size: int, *, layers: int = 2, hidden: int = 64,
                heads: int = 4, kv_heads: int = 2) -> Any:
    """A small config of ``family`` with grouped-query attention (kv_heads < heads)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "gemma":
        return tf.GemmaConfig(**common, head_dim=hidden // heads)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def tiny_model(family: str = "llama", vocab_size: int = 49152, seed: int = 0,
               device: str | None = None, **kw: Any) -> Any:
    """A randomly initialised causal LM of ``family``, deterministic under ``seed``, on
    ``device`` (default: :func:`~backdoorlab.devices.default_device`, where loaded models go)."""
    from transformers import AutoModelForCausalLM

    from .devices import default_device

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **kw),
                                             dtype=torch.float32)
    model.to(device or default_device())
    model.eval()
    return model
