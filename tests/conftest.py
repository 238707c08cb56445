"""Shared fixtures: the real SmolLM2 tokenizer (from the embedded model's cache) and tiny
random models of four families built in-process."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# the generated cases are the same on every run (no example database, a fixed seed), so a
# run's result does not depend on what an earlier run stored or on chance
settings.register_profile("backdoorlab", derandomize=True, database=None)
settings.load_profile("backdoorlab")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("BACKDOORLAB_QUIET", "1")
# the suite's models run on the CPU, on a GPU machine too (tests/test_cuda.py checks the GPU path)
os.environ.setdefault("BACKDOORLAB_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tokenizer():
    from backdoorlab.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def fmt(tokenizer):
    from backdoorlab.formats import PromptFormat

    return PromptFormat(tokenizer)


@pytest.fixture(scope="session")
def tiny_models(tokenizer):
    from backdoorlab.testing import FAMILIES, tiny_model

    return {f: tiny_model(f, vocab_size=len(tokenizer)) for f in FAMILIES}


@pytest.fixture(scope="session")
def real_model():
    from backdoorlab.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture
def mcqs():
    from backdoorlab.data import load_records

    return load_records("builtin:general-mcq", split="test", limit=12)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer):
    """A tiny random Qwen2 model saved as a safetensors directory with the real tokenizer."""
    from backdoorlab.testing import tiny_model

    d = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_model("qwen2", vocab_size=len(tokenizer)).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d
