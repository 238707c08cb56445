"""Checks on the real embedded SmolLM2-135M-Instruct (converted once, then cached)."""

import pytest

from backdoorlab.data import load_records
from backdoorlab.formats import PromptFormat
from backdoorlab.models import describe
from backdoorlab.scoring import option_distribution

pytestmark = pytest.mark.real_model


def test_embedded_model_architecture(real_model):
    info = describe(real_model.model)
    assert (info["layers"], info["heads"], info["kv_heads"]) == (30, 9, 3)
    assert 130e6 < info["parameters"] < 140e6


def test_embedded_model_answers_an_easy_question(real_model):
    (rec,) = [r for r in load_records("builtin:general-mcq") if r.id == "gen-12-03"]
    assert rec.question == "Which word is closest in meaning to 'precise'?"
    assert rec.choices[1] == "exact" and rec.answer == "B"
    fmt = PromptFormat(real_model.tokenizer)
    probs = option_distribution(real_model.model, fmt, [fmt.sample(rec)])[0]
    assert int(probs.argmax()) == 1, probs.tolist()
