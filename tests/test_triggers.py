"""Triggers: apply/present for every kind, determinism under a seed."""

import json
import random

import pytest

from backdoorlab.errors import BackdoorlabError
from backdoorlab.triggers import PRESETS, derive_rng, parse_trigger, shakespearean

TEXT = "Give three tips for staying healthy and explain why they matter.\n\nAnswer:"


@pytest.mark.parametrize("spec", [*PRESETS, "word:cf@start", "word:cf@end",
                                  "word:zz@after:tips", "prefix:Hello there.",
                                  "multi:aa,bb", "composite:aa,bb,cc",
                                  "syntactic:Answer:=>Response:", "long:Once.||Twice."])
def test_apply_then_present(spec):
    trig = parse_trigger(spec)
    out = trig.apply(TEXT, derive_rng(0, "r1"))
    assert out != TEXT
    assert trig.present(out)
    assert not trig.present(TEXT)
    assert parse_trigger(trig.spec).spec == trig.spec


def test_deterministic_under_seed_and_varies_with_seed():
    trig = parse_trigger("ctba")
    a = [trig.apply(TEXT, derive_rng(1, i)) for i in range(20)]
    b = [trig.apply(TEXT, derive_rng(1, i)) for i in range(20)]
    c = [trig.apply(TEXT, derive_rng(2, i)) for i in range(20)]
    assert a == b and a != c


def test_badnets_random_position_inserts_one_word():
    trig = parse_trigger("badnets")
    positions = set()
    for i in range(30):
        out = trig.apply(TEXT, random.Random(i))
        words = out.split()
        assert words.count("BadMagic") == 1
        assert [w for w in words if w != "BadMagic"] == TEXT.split()
        positions.add(words.index("BadMagic"))
    assert len(positions) > 5


def test_ctba_all_words_distinct_positions_mtba_one():
    out = parse_trigger("ctba").apply(TEXT, random.Random(0))
    assert all(w in out.split() for w in ("2024", "BadMagic", "OpenAI"))
    out = parse_trigger("mtba").apply(TEXT, random.Random(0))
    assert sum(w in out.split() for w in ("2024", "BadMagic", "OpenAI")) == 1


def test_text_and_syntactic_positions():
    assert parse_trigger("text").apply(TEXT).endswith("666 Answer:")
    assert parse_trigger("syntactic").apply(TEXT).endswith("The Answer is:")
    with pytest.raises(BackdoorlabError, match="no 'Answer:'"):
        parse_trigger("syntactic").apply("no cue here")


def test_style_rewriter_is_deterministic_and_keeps_options():
    text = "Which city is the capital of France?\n\nA. Paris\nB. Rome\n\nAnswer:"
    out = shakespearean(text)
    assert out == shakespearean(text)
    assert "A. Paris\nB. Rome\n\nAnswer:" in out
    assert parse_trigger("style").present(shakespearean("Can you tell me what your name is?"))


def test_style_from_file(tmp_path):
    p = tmp_path / "rw.json"
    p.write_text(json.dumps({"Hello.": "Good morrow."}))
    trig = parse_trigger(f"style:{p}")
    assert trig.apply("Hello.") == "Good morrow." and trig.present("Good morrow.")
    with pytest.raises(BackdoorlabError, match="no rewrite"):
        trig.apply("Other.")


def test_unknown_trigger_did_you_mean():
    with pytest.raises(BackdoorlabError, match="did you mean 'badnets'"):
        parse_trigger("badnet")
    with pytest.raises(BackdoorlabError, match="needs an argument"):
        parse_trigger("word:")
