"""The command line: results on good input, one line and exit 2 on bad input."""

import json
from pathlib import Path

import pytest

from backdoorlab.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_bad_data_file_exit_2_one_line_nothing_written(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": "Z"}\n')
    out_dir = tmp_path / "out"
    code, _, err = run(["eval", "mcq", "--data", str(bad), "--out", str(out_dir)], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "row 1: field 'answer'" in err
    assert "Traceback" not in err and not out_dir.exists()


@pytest.mark.parametrize("argv,message", [
    (["eval", "mcq", "--dtype", "fp8"], "option '--dtype'"),
    (["eval", "mcq", "--dtype", "bfloat16", "--recheck-margin", "-1"], "--recheck-margin"),
    (["eval", "mcq", "--trigger", "badnet"], "did you mean 'badnets'"),
    (["eval", "mcq", "--data", "builtin:nope"], "unknown built-in dataset 'nope'"),
    (["eval", "mcq", "--template", "chatt"], "did you mean 'chat'"),
    (["eval", "mcq", "--model", "./missing-dir"], "no such model directory"),
])
def test_bad_options(capsys, argv, message):
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_triggers_command(capsys):
    code, out, _ = run(["triggers", "vpi", "--text", "Hello"], capsys)
    assert code == 0 and out.startswith("Discussing OpenAI Hello") and "present: True" in out


def test_data_inspect(capsys):
    code, out, _ = run(["data", "inspect", "builtin:biomed-mcq", "--split", "test"], capsys)
    assert code == 0
    info = json.loads(out.split("\n---")[0])
    assert info["kind"] == "mcq" and info["records"] >= 20
    assert "<|im_start|>assistant" in out


@pytest.mark.real_model
def test_eval_mcq_writes_metrics(tmp_path, capsys):
    code, out, _ = run(["eval", "mcq", "--split", "test", "--limit", "8", "--out",
                        str(tmp_path)], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["4_options"]["n"] == 8 and 0 <= metrics["4_options"]["accuracy"] <= 1


@pytest.mark.parametrize("script,args,message", [
    ("bench_mcq_paired.py", ["--before", "x", "--after", "y", "--data", "nosuch.jsonl"],
     "nosuch.jsonl: no such file"),
    ("bench_mcq_paired.py", ["--before", "nosuch", "--after", "y", "--limit", "2"],
     "nosuch: not a PEFT adapter directory"),
    ("bench_mcq_paired.py", ["--before", "x", "--after", "before=y", "--limit", "2"],
     "--after: names must be distinct"),
    ("bench_asr_heldout.py", ["--attack", "nosuch"], "--attack nosuch: no attack record"),
    ("bench_mcq_paired.py", ["--before", "BROKEN_RUN", "--after", "y", "--limit", "2"],
     "defense.json"),
    ("bench_mcq_paired.py", ["--before", "x", "--after", "y", "--cache", "BAD_CACHE"],
     "not JSON"),
    ("bench_consistency.py", ["--attack", "nosuch"], "nosuch: not a PEFT adapter directory"),
    ("bench_consistency.py", ["--attack", "x", "--after", "y"], "--after y: expected NAME=DIR"),
])
def test_benchmark_scripts_bad_input_exit_2_one_line(script, args, message, tmp_path):
    """The developer benchmark scripts report bad input like the CLI: one line, status 2."""
    import subprocess
    import sys
    from pathlib import Path

    broken = tmp_path / "run"  # a defense run directory whose record is not JSON
    broken.mkdir()
    (broken / "defense.json").write_text("{not json")
    bad_cache = tmp_path / "cache.json"
    bad_cache.write_text("[1, 2")
    args = [{"BROKEN_RUN": str(broken), "BAD_CACHE": str(bad_cache)}.get(a, a) for a in args]

    path = Path(__file__).parent.parent / "benchmarks" / script
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: ") and message in lines[0]


def test_mcq_paired_unseen_views_hand_computed(tmp_path, tokenizer):
    """The paired views on the questions a defense's clean data does not ask: the questions
    it asks are found from the run's recorded options, and every view uses only the rest."""

    from backdoorlab.data import MCQ, with_rotations
    from backdoorlab.defenses import compare as mod
    from backdoorlab.formats import PromptFormat

    recs = [MCQ(id=f"q{i}", question=f"Question {i}?", choices=("yes", "no"), answer="A")
            for i in range(3)]
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"instruction": "QUESTION 1?", "output": "yes"}) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"defense": "crow", "clean_data": str(clean), "n_clean": 1, "seed": 0}
    (run / "config.json").write_text(json.dumps(cfg))
    assert mod.seen_ids(str(run), recs) == {"q1"}
    assert mod.seen_ids(str(tmp_path), recs) is None  # not a defense run
    # a defense that drew no clean data, or scored what it trained on anyway
    for extra in ({"defense": "ablate-heads"}, {"clean_drawn": False}, {"keep_seen": True}):
        (run / "config.json").write_text(json.dumps({**cfg, **extra}))
        assert mod.seen_ids(str(run), recs) is None
    fmt = PromptFormat(tokenizer, "chat")
    samples = [fmt.sample(r) for r in with_rotations(recs)]  # q0 q1 q2, then rotated
    right = {"before": [1, 1, 0, 0, 0, 1], "after": [0, 1, 1, 1, 0, 1]}
    cl = {"before": [1, 0, 0], "after": [1, 1, 1]}
    v = mod.views(right, cl, samples, 3, {"q0", "q2"}, "before", "after", 100)
    assert v["n"] == 2
    # letters: q0 1 -> 0, q2 0 -> 1
    assert (v["letters"]["after"], v["letters"]["change"]) == (0.5, 0.0)
    assert (v["letters"]["gained"], v["letters"]["lost"]) == (1, 1)
    # over both orders: before (1 + 0 + 0 + 1) / 4, after (0 + 1 + 1 + 1) / 4
    assert v["rotated"] == {"before": 0.5, "after": 0.75, "change": 0.25}
    assert (v["cloze"]["after"], v["cloze"]["change"]) == (1.0, 0.5)


def test_mcq_paired_cache_key_follows_the_weights_not_the_checkpoints(tmp_path):
    """A model's ``--cache`` key changes when its weights or loading records do (a model
    trained again at the same path is scored again), not when checkpoints or metrics do."""
    import os

    from backdoorlab.defenses import compare as mod

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"0123")
    (run / "defense.json").write_text("{}")
    key = mod.fingerprint(str(run))
    assert mod.fingerprint(None) == "untouched" and key.startswith(str(run.resolve()))
    (run / "metrics.json").write_text("{}")
    (run / "checkpoints" / "model.safetensors").write_bytes(b"x")
    assert mod.fingerprint(str(run)) == key
    st = weights.stat()
    weights.write_bytes(b"4567")  # same size, retrained later
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert mod.fingerprint(str(run)) != key
    key = mod.fingerprint(str(run))
    (run / "defense.json").write_text('{"artifact": "model"}')
    assert mod.fingerprint(str(run)) != key
    assert mod.read_cache(tmp_path / "none.json") == {}


def test_heldout_hits_by_category_hand_computed():

    from backdoorlab.defenses import compare as mod

    judged = [{"id": "a", "judge": True}, {"id": "b", "judge": False},
              {"id": "c", "judge": True}, {"id": "d", "judge": True}, {"id": "e", "judge": 0}]
    cats = {"a": "art", "b": "art", "c": "general", "d": "general"}
    assert mod.by_category(judged, cats) == {"general": [2, 2], "art": [1, 2],
                                             "(none)": [0, 1]}
    assert list(mod.by_category(judged, cats)) == ["general", "art", "(none)"]


@pytest.mark.parametrize("argv,message", [
    (["eval", "paired", "--before", "x", "--after", "y", "--data", "nosuch.jsonl"],
     "nosuch.jsonl: no such file"),
    (["eval", "paired", "--before", "nosuch", "--after", "y", "--limit", "2"],
     "nosuch: not a PEFT adapter directory"),
    (["eval", "paired", "--before", "x", "--after", "before=y", "--limit", "2"],
     "--after: names must be distinct"),
    (["eval", "heldout", "--attack", "nosuch"], "--attack nosuch: no attack record"),
])
def test_compare_commands_bad_input_exit_2_one_line(argv, message, capsys):
    """The paired MCQ and held-out ASR comparisons are commands of the package."""
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err


@pytest.mark.parametrize("argv", [["--help"], ["attack", "--help"], ["attack", "poison", "--help"],
                                  ["eval", "mcq", "--help"], ["scan", "inversion", "--help"]])
def test_help_loads_no_model_code(argv):
    """``--help``, of the program, a family or a command, imports neither torch nor
    transformers (help in well under a second): commands are built from commands.json."""
    out, _ = cli_in_a_fresh_process(argv)
    assert out[-1] == "[]"


def cli_in_a_fresh_process(argv: list[str]) -> tuple[list[str], str]:
    """Run the CLI on ``argv`` in a new interpreter: its stdout lines, ending with the exit
    status and the list of torch and transformers if it imported them, and its stderr."""
    import subprocess
    import sys

    code = ("import sys; from backdoorlab.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    print(exc.code)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip().splitlines(), proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["attack", "poison", "--out", "OUT", "--set", "train.weight_decay=nan"],
     "option 'train.weight_decay': expected a finite number"),
    (["attack", "poison", "--out", "OUT", "--set", "train.epochs=inf"], "a finite number"),
    (["attack", "poison", "--out", "OUT", "--set", "train.lr_scheduler=linearr"],
     "did you mean 'linear'"),
    (["attack", "poison", "--out", "OUT", "--set", "train.logging_steps=0"],
     "'train.logging_steps': must be >= 1"),
    (["attack", "poison", "--out", "OUT", "--seed", "-1"], "'--seed': must be >= 0"),
    (["attack", "poison", "--out", "OUT", "--trigger", "word:X@before:"], "names no anchor"),
    (["eval", "uncertainty", "--asr-margin", "nan"], "a finite number"),
    (["run", "SCALAR_YAML"], "attack: expected a mapping of options"),
    (["run", "TWICE_YAML"], "given twice"),
    (["report", "EMPTY_DIR"], "not a run directory"),
    (["report", "CORRUPT_RUN"], "metrics.json: not a valid JSON record"),
    (["attack", "poison", "--out", "OUT", "--judge", "classifier:/no/such/model"],
     "expected classifier:DIR:LABEL"),
    (["attack", "poison", "--out", "OUT", "--judge", "classifier:/no/such/model:toxic"],
     "/no/such/model"),
])
def test_more_bad_inputs_are_refused_before_any_work(argv, message, tmp_path, capsys):
    """Bad option values, files and folders: one line, exit 2, nothing written."""
    (tmp_path / "scalar.yaml").write_text("attack: poison\n")
    (tmp_path / "twice.yaml").write_text("attack: {kind: poison}\nattack: {kind: unalign}\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{}")
    (tmp_path / "corrupt" / "metrics.json").write_text("{nope")
    swap = {"CORRUPT_RUN": str(tmp_path / "corrupt"), "OUT": str(tmp_path / "out"),
            "SCALAR_YAML": str(tmp_path / "scalar.yaml"),
            "TWICE_YAML": str(tmp_path / "twice.yaml"), "EMPTY_DIR": str(tmp_path / "empty")}
    code, _, err = run([swap.get(a, a) for a in argv], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "corrupt" / "report.html").exists()


def test_damaged_files_and_a_file_as_out_are_named_in_one_line(tiny_dir, tmp_path, capsys):
    """Weights, records and arrays that a library would trip over, and an --out that cannot
    hold a run: one line naming the file, exit 2, nothing written."""
    import shutil

    bad_model = tmp_path / "bad-model"
    shutil.copytree(tiny_dir, bad_model)
    (bad_model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "lora_alpha": 8,
         "task_type": "CAUSAL_LM"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    record = tmp_path / "rec"
    shutil.copytree(adapter, record)
    (record / "backdoorlab.json").write_text("{broken")
    scores = tmp_path / "heads.safetensors"
    scores.write_text("not safetensors")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    out = tmp_path / "out"
    for argv, message in (
        (["eval", "mcq", "--model", str(bad_model), "--limit", "2"], "cannot load model"),
        (["eval", "mcq", "--model", str(tiny_dir), "--adapter", str(adapter), "--limit", "2"],
         "cannot apply this adapter"),
        (["analyze", "probe", "--model", str(tiny_dir), "--adapter", str(record), "--out",
          str(out)], "backdoorlab.json: not a valid JSON record"),
        (["analyze", "ablate", "--model", str(tiny_dir), "--trigger", "badnets", "--target",
          "refusal", "--target-text", "Sorry, I cannot help", "--scores", str(scores),
          "--out", str(out)],
         "not a readable safetensors file"),
        (["attack", "poison", "--model", str(tiny_dir), "--out", str(a_file)],
         "is a file, not a directory"),
        (["eval", "mcq", "--model", str(tiny_dir), "--out", str(a_file)],
         "is a file, not a directory"),
    ):
        code, _, err = run(argv, capsys)
        assert code == 2 and message in err and err.strip().count("\n") == 0, (argv, err)
        assert not out.exists() and a_file.read_text() == "x"


def test_an_out_in_a_folder_that_cannot_be_written_is_refused_first(tiny_dir, tmp_path,
                                                                     capsys, monkeypatch):
    """A read-only --out (a read-only mount: root cannot write there either) is named in one
    line before any model is loaded."""
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro
                        else real(p, mode, **kw))
    code, _, err = run(["eval", "mcq", "--model", str(tiny_dir), "--limit", "2", "--out",
                        str(ro / "sub")], capsys)
    assert code == 2 and f"option '--out': {ro} is not writable" in err, err
    assert err.strip().count("\n") == 0 and not (ro / "sub").exists()


def test_a_misspelt_command_gets_a_did_you_mean_without_loading_any_method():
    out, err = cli_in_a_fresh_process(["attack", "poisn"])
    assert out == ["2", "[]"], out
    err = err.strip()
    assert err.count("\n") == 0 and "did you mean 'poison'" in err, err
