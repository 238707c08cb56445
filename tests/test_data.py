"""Loaders: every supported layout, and one clear line for every kind of bad file."""

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backdoorlab.data import BUILTIN, MCQ, Instruction, load_records
from backdoorlab.errors import BackdoorlabError


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_builtin_sets_sizes_and_splits():
    gen = load_records("builtin:general-mcq")
    bio = load_records("builtin:biomed-mcq")
    assert len(gen) >= 300 and len(bio) >= 100
    assert len({r.subject for r in gen}) >= 10
    train = load_records("builtin:general-mcq", split="train")
    test = load_records("builtin:general-mcq:test")
    assert {r.id for r in train}.isdisjoint({r.id for r in test})
    assert len(train) + len(test) == len(gen)
    assert set(BUILTIN) >= {"general-mcq", "biomed-mcq"}


def test_open_instructions_fit_for_clean_data():
    """CROW's default clean set: open-ended, held apart from the prompts defenses are scored
    on, and free of every built-in trigger (a trigger in it would hand the defense knowledge
    of the trigger, which a defender does not have)."""
    from backdoorlab.triggers import PRESETS

    rows = load_records("builtin:open-instructions")
    train = load_records("builtin:open-instructions", split="train")
    assert len(rows) == 200 and len(train) == 160
    assert len({r.instruction + r.input for r in rows}) == len(rows)
    # free text: answers of several words (the fact set's are one sentence)
    assert sum(len(r.output.split()) for r in rows) / len(rows) > 30
    scored = {r.instruction for r in load_records("builtin:benign-instructions", split="test")}
    assert scored.isdisjoint(r.instruction for r in rows)
    triggers = [make() for make in PRESETS.values()]
    for r in rows:
        text = " ".join((r.instruction, r.input, r.output))
        assert not any(t.present(text) for t in triggers), r.id


def test_jsonl_csv_json_tsv_parquet_roundtrip(tmp_path):
    rows = [{"id": "a", "question": "Q1?", "choices": ["x", "y", "z"], "answer": "B"},
            {"id": "b", "question": "Q2?", "choices": ["x", "y"], "answer": "A"}]
    p = write(tmp_path, "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    recs = load_records(p)
    assert recs[0] == MCQ(id="a", question="Q1?", choices=("x", "y", "z"), answer="B")
    p = write(tmp_path, "d.json", json.dumps(rows))
    assert load_records(p) == recs
    p = write(tmp_path, "m.csv", "question,choice0,choice1,choice2,choice3,answer\n"
                                 "What?,w,x,y,z,2\n")
    (rec,) = load_records(p)  # MMLU layout: integer answer index
    assert rec.answer == "C" and rec.choices == ("w", "x", "y", "z")
    p = write(tmp_path, "t.tsv", "instruction\tinput\toutput\nSay hi\t\tHi\n")
    assert load_records(p) == [Instruction(id="t-1", instruction="Say hi", output="Hi")]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert load_records(tmp_path / "d.parquet") == recs


def test_arc_layout_and_answer_as_text(tmp_path):
    row = {"id": "arc1", "question": {"stem": "Which is a gas?", "choices": [
        {"text": "iron", "label": "A"}, {"text": "steam", "label": "B"},
        {"text": "ice", "label": "C"}]}, "answerKey": "B"}
    p = write(tmp_path, "arc.jsonl", json.dumps(row) + "\n")
    assert load_records(p)[0].answer == "B"
    p = write(tmp_path, "t.jsonl", json.dumps(
        {"question": "Q?", "choices": ["red", "blue"], "answer": "blue"}) + "\n")
    assert load_records(p)[0].answer == "B"


def test_column_mapping(tmp_path):
    p = write(tmp_path, "c.jsonl", json.dumps(
        {"prompt_text": "Q?", "opts": ["a", "b"], "label": 1}) + "\n")
    (rec,) = load_records(p, kind="mcq", columns="question=prompt_text,choices=opts,answer=label")
    assert rec.question == "Q?" and rec.answer == "B"


@pytest.mark.parametrize("name,content,message", [
    ("empty.jsonl", "", r"empty\.jsonl: the file is empty"),
    ("nocol.csv", "text,label\nhi,A\n", r"nocol\.csv: row 1: cannot tell the record kind"),
    ("bad.jsonl", '{"question": "Q?", "choices": ["a", "b"], "answer": "D"}\n',
     r"bad\.jsonl: row 1: field 'answer': 'D' is not among the choices A-B"),
    ("dup.jsonl", '{"id": "x", "instruction": "a"}\n{"id": "x", "instruction": "b"}\n',
     r"dup\.jsonl: row 2: duplicate id 'x' \(first seen in row 1\)"),
    ("broken.jsonl", '{"question": "Q?"}\n{oops\n', r"broken\.jsonl: line 2: invalid JSON"),
    ("few.jsonl", '{"question": "Q?", "choices": ["a"], "answer": "A"}\n',
     r"few\.jsonl: row 1: 1 choices; between 2 and 10"),
    ("noq.jsonl", '{"question": "", "choices": ["a", "b"], "answer": "A"}\n',
     r"noq\.jsonl: row 1: missing or empty field 'question'"),
    ("x.txt", "hello", r"x\.txt: unsupported file type '\.txt'"),
])
def test_bad_files_get_one_clear_line(tmp_path, name, content, message):
    p = write(tmp_path, name, content)
    with pytest.raises(BackdoorlabError, match=message) as exc:
        load_records(p)
    assert "\n" not in str(exc.value)


def test_not_utf8_and_missing_file(tmp_path):
    p = write(tmp_path, "latin.jsonl", b'{"instruction": "caf\xe9"}\n', mode="wb")
    with pytest.raises(BackdoorlabError, match=r"latin\.jsonl: line 1: not valid UTF-8"):
        load_records(p)
    with pytest.raises(BackdoorlabError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")


def test_unknown_builtin_did_you_mean():
    with pytest.raises(BackdoorlabError, match="did you mean 'general-mcq'"):
        load_records("builtin:general-mqc")


def test_missing_answer_column_named(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"question": "Q?", "choices": ["a", "b"]}\n')
    with pytest.raises(BackdoorlabError, match=r"row 1: missing field 'answer'"):
        load_records(p)


def test_atomic_writes_are_ordinary_files(tmp_path):
    import os

    from backdoorlab.io import atomic_write_json

    p = atomic_write_json(tmp_path / "m.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_hf_source_split_is_the_datasets_own(monkeypatch):
    """An ``hf:`` source's split goes to the datasets library (its rows carry no 'split'
    column): the spec's own split wins, else the one asked (the suites' ``mcq_split``), else
    train; Hugging Face's ai2_arc layout loads as MCQ."""
    import datasets

    from backdoorlab.data import load_split

    calls = []
    row = {"id": "q1", "question": "Which is a mammal?", "answerKey": "A",
           "choices": {"text": ["cat", "trout"], "label": ["A", "B"]}}

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        return [row]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    recs = load_records("hf:allenai/ai2_arc:ARC-Easy:test", kind="mcq", split="validation")
    assert calls[-1] == ("allenai/ai2_arc", "ARC-Easy", "test")
    assert recs[0].choices == ("cat", "trout") and recs[0].answer_index == 0
    load_records("hf:some/set", kind="mcq", split="test")
    assert calls[-1] == ("some/set", None, "test")
    load_records("hf:some/set", kind="mcq")
    assert calls[-1] == ("some/set", None, "train")
    assert len(load_split("hf:some/set", "test", kind="mcq")) == 1 and calls[-1][2] == "test"
    with pytest.raises(BackdoorlabError, match="expected hf:"):
        load_records("hf:a:b:c:d")


@pytest.mark.parametrize("row,message", [
    ({"question": "Q?", "choices": ["a", "b"], "answer": True}, "field 'answer': expected text"),
    ({"question": ["Q", "?"], "choices": ["a", "b"], "answer": "A"},
     "field 'question': expected text"),
    ({"question": "Q?", "choices": [["a"], ["b"]], "answer": "A"},
     "field 'choices': every choice must be text"),
    ({"instruction": {"text": "do"}, "output": "ok"}, "field 'instruction': expected text"),
])
def test_fields_of_the_wrong_type_are_named_with_their_row(row, message, tmp_path):
    import json

    from backdoorlab.data import load_records
    from backdoorlab.errors import BackdoorlabError

    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"question": "fine?", "choices": ["a", "b"], "answer": "A"}
                            if "question" in row else {"instruction": "fine", "output": "ok"})
                 + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BackdoorlabError, match=f"rows.jsonl: row 2: {message}"):
        load_records(str(f))


def test_a_misspelt_column_mapping_and_abstain_options_past_the_limit(tmp_path):
    import json

    from backdoorlab.data import add_abstain_options, load_records
    from backdoorlab.errors import BackdoorlabError

    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"stem": "Q?", "choices": list("abcdefghij"), "answer": "A"}) + "\n")
    with pytest.raises(BackdoorlabError, match="unknown field 'questoin' .did you mean "
                                               "'question'"):
        load_records(str(f), columns="questoin=stem")
    (rec,) = load_records(str(f), columns="question=stem")
    with pytest.raises(BackdoorlabError, match="10 choices leave no room"):
        add_abstain_options(rec)


def test_an_unreachable_hub_is_one_line_at_once(monkeypatch):
    """Offline, an ``hf:`` set not in the cache fails at once (the hub libraries would retry
    each request for half a minute), naming the source."""
    import socket
    import time

    from backdoorlab.data import loaders

    def refuse(*a, **k):
        raise OSError("no route")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert not loaders.hub_reachable()
    t0 = time.perf_counter()
    with pytest.raises(BackdoorlabError, match=r"hf:someone/nothing: not in the local cache, "
                                               "and the Hugging Face Hub cannot be reached"):
        load_records("hf:someone/nothing")
    assert time.perf_counter() - t0 < 15
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("dialled"))
    assert not loaders.hub_reachable()


def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=6), st.sampled_from(["A", "b", "C", "10", ""]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=3),
                                                                         inner, max_size=2)),
                        max_leaves=6)


def _check_loaded_or_named(path, recs_or_exc) -> None:
    if isinstance(recs_or_exc, BackdoorlabError):
        text = str(recs_or_exc)
        assert "\n" not in text and path.name in text, text
        return
    for r in recs_or_exc:  # what loads is well formed
        if isinstance(r, MCQ):
            assert isinstance(r.question, str) and r.question
            assert all(isinstance(c, str) for c in r.choices) and 2 <= len(r.choices) <= 10
            assert 0 <= r.answer_index < len(r.choices)
        else:
            assert isinstance(r, Instruction) and isinstance(r.instruction, str)
            assert r.instruction and isinstance(r.output, str) and isinstance(r.input, str)


def _load(path, **kw):
    try:
        return load_records(path, **kw)
    except BackdoorlabError as exc:  # any other exception fails the test
        return exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_damaged_records_load_well_formed_or_fail_naming_the_file(data, tmp_path_factory):
    """Every field of an MCQ or instruction row replaced by any JSON value (nested lists,
    objects, non-finite numbers, booleans, blanks): the row loads as a well-formed record or
    the file is named in one line; no other exception."""
    import json

    mcq = {"id": "q1", "question": "Q?", "choices": ["a", "b", "c"], "answer": "A"}
    ins = {"id": "i1", "instruction": "Do it.", "input": "", "output": "Done."}
    row = dict(data.draw(st.sampled_from([mcq, ins])))
    for key in data.draw(st.lists(st.sampled_from(sorted(row)), min_size=1, max_size=3,
                                  unique=True)):
        if data.draw(st.booleans()):
            row[key] = data.draw(_json_values())
        else:
            del row[key]
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    kind = data.draw(st.sampled_from(["auto", "mcq", "instruction"]))
    _check_loaded_or_named(path, _load(path, kind=kind))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv"]),
       cut=st.integers(0, 400), junk=st.binary(max_size=40))
@example(suffix=".csv", cut=25, junk=b"\r\x00")  # a line break then NUL mid-field
@example(suffix=".tsv", cut=400, junk=b"\x00")
def test_generated_damaged_files_load_well_formed_or_fail_naming_the_file(
        suffix, cut, junk, tmp_path_factory):
    """A good file of each format cut short anywhere and with bytes appended: it loads as
    well-formed records or the file is named in one line."""
    import json

    rows = [{"id": f"q{i}", "question": f"Q{i}?", "choices": ["a", "b", "c"], "answer": "B"}
            for i in range(4)]
    if suffix == ".jsonl":
        good = "".join(json.dumps(r) + "\n" for r in rows)
    elif suffix == ".json":
        good = json.dumps(rows)
    else:
        sep = "," if suffix == ".csv" else "\t"
        good = sep.join(["id", "question", "A", "B", "C", "answer"]) + "\n" + "".join(
            sep.join([r["id"], r["question"], *r["choices"], r["answer"]]) + "\n" for r in rows)
    path = tmp_path_factory.mktemp("files") / f"data{suffix}"
    path.write_bytes(good.encode()[:cut] + junk)
    _check_loaded_or_named(path, _load(path))
