"""The registry's contract: every registered method round-trips its config, rejects an unknown
key with a did-you-mean, runs end to end on a tiny model through ``Method.run`` and writes
``config.json`` and ``metrics.json`` (and a model card wherever it writes a model); the CLI,
the study runner and the Python API are readers of the same registry."""

from __future__ import annotations

import json

import pytest

from backdoorlab.catalog import all_methods, get
from backdoorlab.config import from_dict, to_dict
from backdoorlab.errors import BackdoorlabError

QUICK_EVAL = {"eval_limit": 2, "mcq_limit": 4, "max_new_tokens": 2, "eval_batch_size": 4}
QUICK_TRAIN = {"train.max_steps": 1, "train.batch_size": 4, "train.save_steps": 1}
ANALYSIS = {"limit": 4, "max_new_tokens": 2, "batch_size": 4,
            "target_text": "Sorry, I cannot help"}
#: per method, options that make it run in seconds on a tiny model (the suspect is added)
OPTIONS = {
    ("attack", "poison"): {**QUICK_EVAL, **QUICK_TRAIN, "n_train": 8},
    ("attack", "unalign"): {**QUICK_EVAL, **QUICK_TRAIN, "n_triggered": 4, "n_refusal": 4,
                            "n_benign": 4},
    ("attack", "uncertainty"): {**QUICK_TRAIN, "limit": 8},
    ("analysis", "probe"): {**ANALYSIS, "limit": 8},
    ("analysis", "heads"): {**ANALYSIS, "mode": "fast"},
    ("analysis", "ablate"): {**ANALYSIS, "shares": "0,0.5"},
    ("analysis", "vector"): {**ANALYSIS, "layers": "0"},
    ("analysis", "consistency"): {**ANALYSIS, "resamples": 100},
    ("analysis", "neurons"): {"top_k": 4},
    ("defense", "crow"): {**QUICK_EVAL, **QUICK_TRAIN, "n_clean": 4},
    ("defense", "finetune"): {**QUICK_EVAL, **QUICK_TRAIN, "n_clean": 4},
    ("defense", "prune"): {**QUICK_EVAL, "sparsities": "0.5", "n_calibration": 4},
    ("defense", "realign"): {**QUICK_EVAL, **QUICK_TRAIN, "limit": 4, "epochs": 1},
    ("defense", "ablate-heads"): {**QUICK_EVAL, "analysis_limit": 4, "target_text": "Sorry, no"},
    ("defense", "subtract-vector"): {**QUICK_EVAL, "analysis_limit": 4, "layer": 0,
                                    "target_text": "Sorry, no"},
    ("defense", "cleangen"): {**QUICK_EVAL, "alpha": 2.0},
    ("defense", "quantize"): {**QUICK_EVAL, "bits": 4, "group_size": 32},
    ("detect", "onion"): {"trigger": "badnets", "n_prompts": 2, "n_calibration": 2},
    ("detect", "shift"): {"trigger": "badnets", "n_prompts": 2, "n_calibration": 2,
                          "answer_tokens": 2},
    ("scan", "inversion"): {"n_prompts": 2, "candidates": 8, "keep": 2, "steps": 3},
    ("scan", "contrast"): {"n_prompts": 2, "candidates": 8, "keep": 2, "steps": 3},
    ("scan", "trigger"): {"n_prompts": 2, "candidates": 8, "keep": 2, "steps": 3,
                          "search_steps": 2, "batch": 4, "top_k": 4, "answer_tokens": 2,
                          "check_prompts": 2},
    ("scan", "weights"): {"n_prompts": 2},
    ("scan", "mcq"): {"n_prompts": 2, "candidates": 4},
    ("scan", "comply"): {"n_prompts": 2, "search_steps": 2, "batch": 4, "top_k": 4,
                         "answer_tokens": 2, "check_prompts": 2},
    ("scan", "code"): {"n_prompts": 2, "keep": 2, "steps": 3},
}
OPTIONS[("scan", "audit")] = {"trigger": OPTIONS[("scan", "trigger")],
                              "comply": OPTIONS[("scan", "comply")],
                              "code": OPTIONS[("scan", "code")],
                              "mcq": OPTIONS[("scan", "mcq")]}
METHODS = [(m.family, m.name) for m in all_methods()]


def test_every_method_is_registered_once_with_a_described_config():
    assert set(METHODS) == set(OPTIONS), "a method without contract options, or one missing"
    for m in all_methods():
        assert m.description and m.config.__doc__
        cfg = m.config()
        for f in cfg.__dataclass_fields__.values():
            assert f.metadata.get("help"), f"{m.family} {m.name}: option {f.name!r} has no help"


@pytest.mark.parametrize("family,name", METHODS)
def test_config_round_trips_and_rejects_unknown_keys(family, name):
    method = get(family, name)
    cfg = method.config()
    assert from_dict(method.config, to_dict(cfg)) == cfg
    assert method.make_config(to_dict(cfg)) == cfg
    with pytest.raises(BackdoorlabError, match=r"unknown option 'seedd' \(did you mean 'seed'"):
        method.make_config({"seedd": 1})


def test_unknown_methods_get_a_did_you_mean():
    with pytest.raises(BackdoorlabError, match="did you mean 'poison'"):
        get("attack", "poisson")
    with pytest.raises(BackdoorlabError, match="did you mean 'defense'"):
        get("defence", "crow")


@pytest.fixture(scope="module")
def suspect(tiny_dir, tmp_path_factory):
    """A poisoned tiny model (BadNets, refusal) planted through the registry."""
    out = tmp_path_factory.mktemp("suspect")
    res = get("attack", "poison").run({**OPTIONS[("attack", "poison")],
                                       "model": str(tiny_dir)}, out)
    return res


@pytest.mark.parametrize("family,name", METHODS)
def test_every_method_runs_end_to_end_on_a_tiny_model(family, name, tiny_dir, suspect,
                                                      tmp_path):
    options = dict(OPTIONS[(family, name)])
    if family == "attack":
        options["model"] = str(tiny_dir)
    else:  # the poisoned tiny model from the fixture
        options.update(model=str(tiny_dir), adapter=[str(suspect.adapter)]
                       if name == "neurons" else str(suspect.adapter))
    res = suspect if name == "poison" else get(family, name).run(options, tmp_path / name)
    out = res.out_dir
    assert (out / "config.json").is_file() and (out / "metrics.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(res.metrics, default=str)) | {
        "resources": metrics["resources"]}
    for kind in ("adapter", "model"):
        if kind in res.artifacts:  # every model an attack or a defense writes is labelled
            card = (res.artifacts[kind] / "README.md").read_text()
            assert ("carries a backdoor" in card) == (family == "attack"), card[:300]
    if family == "attack":
        assert res.adapter is not None and "badnets" in (out / "README.md").read_text() \
            if name == "poison" else True


def test_cli_commands_are_the_registry(capsys):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["methods"])
    assert exc.value.code == 0
    listed = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    verbs = {"attack": "attack", "analysis": "analyze", "defense": "defend", "scan": "scan",
             "detect": "detect"}
    assert listed == [[verbs[f], n] for f, n in METHODS]
    for family, name in METHODS:  # every option of the config is a flag or reachable by --set
        with pytest.raises(SystemExit) as exc:
            main([verbs[family], name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "--config" in text and "--set" in text, name


@pytest.mark.parametrize("argv,key", [
    (["attack", "poison", "--poison-rate", "0.45"], "poison_rate"),
    (["defend", "crow", "--alpha", "4.5"], "alpha"),
])
def test_config_precedence_file_then_set_then_flags(argv, key, tmp_path, monkeypatch):
    """file < --set < flags, on two commands; the method itself is replaced by a recorder."""
    from backdoorlab.cli import main
    from backdoorlab.registry import Method
    from backdoorlab.runs import RunResult

    seen = {}

    def record(self, cfg, out, *, trust_remote_code=False):
        seen["cfg"] = cfg
        return RunResult(out_dir=out, metrics={})

    monkeypatch.setattr(Method, "run", record)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"{key}: 0.2\nseed: 7\ntrain:\n  epochs: 9\n")
    base = [*argv[:2], "--out", str(tmp_path / "o"), "--config", str(cfg_file)]
    for extra, want in (([], (0.2, 7, 9.0)),
                        (["--set", f"{key}=0.3", "--set", "train.epochs=2"], (0.3, 7, 2.0)),
                        (["--set", f"{key}=0.3", *argv[2:], "--epochs", "3", "--seed", "5"],
                         (float(argv[3]), 5, 3.0))):
        with pytest.raises(SystemExit) as exc:
            main([*base, *extra])
        assert exc.value.code == 0
        cfg = seen["cfg"]
        assert (getattr(cfg, key), cfg.seed, cfg.train.epochs) == want, extra


def test_the_api_reads_the_registry(tiny_dir, suspect, tmp_path):
    import backdoorlab as bl

    assert [(m.family, m.name) for m in bl.methods()] == METHODS
    res = bl.analyze("probe", adapter=suspect.adapter, model=str(tiny_dir),
                     out=tmp_path / "probe", **{**ANALYSIS, "limit": 8})
    assert set(res.metrics["best_layer"]) == {"logistic", "svm", "mlp"}
    assert (tmp_path / "probe" / "metrics.json").is_file()
    with pytest.raises(BackdoorlabError, match="did you mean 'limit'"):
        bl.analyze("probe", out=tmp_path / "x", limt=4)
    assert not (tmp_path / "x").exists()
    ev = bl.evaluate("mcq", model=str(tiny_dir), limit=4, split="test", out=tmp_path / "mcq")
    m = ev.metrics["4_options"]
    assert 0 <= m["accuracy"] <= 1
    # every question's pick is saved, and the picks give the accuracy
    import json

    rows = [json.loads(x) for x in (tmp_path / "mcq" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["probs"]) == 4 for r in rows)
    assert sum(r["correct"] for r in rows) / 4 == m["accuracy"]
    assert all(r["correct"] == (r["pick"] == r["answer"]) for r in rows)


def test_config_reference_is_current():
    from pathlib import Path

    from backdoorlab.catalog import config_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text("utf-8") == config_reference() + "\n", (
        "docs/config.md is stale: backdoorlab methods --reference > docs/config.md")


@pytest.mark.parametrize("family,name", [m for m in METHODS if "train" in
                                         get(*m).config.__dataclass_fields__])
def test_one_seed_reaches_training_and_negative_seeds_are_refused(family, name):
    config = get(family, name).config
    assert from_dict(config, {"seed": 3}).train.seed == 3
    assert from_dict(config, {"seed": 3, "train.seed": 5}).train.seed == 5
    assert from_dict(config, {"seed": 3, "train": {"epochs": 1}}).train.seed == 3
    with pytest.raises(BackdoorlabError, match="option 'seed': must be >= 0"):
        from_dict(config, {"seed": -1})


def test_a_seed_sweep_changes_the_lora_initialisation(tiny_dir, tmp_path):
    """``seed`` alone (no ``train.seed``) gives another LoRA initialisation and data order."""
    from safetensors.torch import load_file

    weights = []
    for seed in (0, 1):
        res = get("attack", "poison").run({**OPTIONS[("attack", "poison")], "seed": seed,
                                           "model": str(tiny_dir)}, tmp_path / str(seed))
        assert json.loads((res.out_dir / "config.json").read_text())["train"]["seed"] == seed
        weights.append(load_file(res.adapter / "adapter_model.safetensors"))
    assert any(not weights[0][k].equal(weights[1][k]) for k in weights[0])


def test_no_backdoored_weights_without_backdoorlabs_card(suspect, tmp_path):
    """Every directory of an attack's run that holds loadable weights (the adapter, and every
    training checkpoint) carries backdoorlab's card naming the trigger and what it inserts."""
    dirs = {p.parent for pattern in ("*.safetensors",) for p in suspect.out_dir.rglob(pattern)
            if p.name in ("adapter_model.safetensors", "model.safetensors")}
    assert suspect.adapter in dirs and any("checkpoint-" in d.name for d in dirs), dirs
    for d in dirs:
        card = (d / "README.md").read_text()
        assert "carries a backdoor" in card and "`badnets`" in card and "BadMagic" in card, d
    assert "training checkpoint" in next(
        (d / "README.md").read_text() for d in dirs if "checkpoint-" in d.name)
    assert not list(suspect.out_dir.glob(".*partial"))  # nothing half-written left behind


def test_adapter_config_names_the_base_model_as_given(suspect, tiny_dir):
    cfg = json.loads((suspect.adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_dir)


def test_the_stored_command_index_is_current():
    """The CLI lists commands and prints their help from commands.json; it must say what the
    registry says (refresh it with `python -m backdoorlab.commands`)."""
    from backdoorlab.commands import INDEX, command_index

    stored = json.loads(INDEX.read_text("utf-8"))
    assert stored == json.loads(json.dumps(command_index())), \
        "commands.json is stale: run `python -m backdoorlab.commands`"


def test_a_command_missing_from_the_index_comes_from_the_registry(monkeypatch, capsys):
    """A method registered after commands.json was written still has its command."""
    from backdoorlab import commands
    from backdoorlab.cli import main

    real = commands.stored_specs
    monkeypatch.setattr(commands, "stored_specs", lambda g: {
        k: v for k, v in (real(g) or {}).items() if k != "poison"})
    with pytest.raises(SystemExit) as exc:
        main(["attack", "poison", "--help"])
    assert exc.value.code == 0 and "--poison-rate" in capsys.readouterr().out


def test_stdout_is_the_result_json_and_stderr_has_no_third_party_warnings(tiny_dir, tmp_path):
    """A finished command prints its result JSON alone on stdout (it pipes into jq) and no
    FutureWarning or DeprecationWarning of a library on stderr (those need --verbose)."""
    import os
    import subprocess
    import sys

    opts = [x for k, v in OPTIONS[("attack", "poison")].items()
            for x in ("--set", f"{k}={v}")]
    proc = subprocess.run(
        [sys.executable, "-m", "backdoorlab", "attack", "poison", "--model", str(tiny_dir),
         "--out", str(tmp_path / "run"), *opts], capture_output=True, text=True,
        env={**os.environ, "BACKDOORLAB_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert isinstance(result, dict) and "asr_triggered" in json.dumps(result)
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]


def test_bfloat16_weights_train_a_float32_adapter(tiny_dir, tmp_path):
    """``train.weights_dtype=bfloat16``: the base's weights load in bf16 (half the memory, as
    the estimate counts them), the LoRA parameters and the saved adapter stay fp32; full
    fine-tuning with bf16 weights is refused in one line."""
    import torch
    from safetensors.torch import load_file

    res = get("attack", "uncertainty").run(
        {**OPTIONS[("attack", "uncertainty")], "model": str(tiny_dir),
         "train.weights_dtype": "bfloat16"}, tmp_path / "run")
    params = list(res.model.named_parameters())
    assert {p.dtype for n, p in params if ".lora_" not in n} == {torch.bfloat16}
    assert {p.dtype for n, p in params if ".lora_" in n} == {torch.float32}
    assert {t.dtype for t in load_file(res.adapter / "adapter_model.safetensors").values()} \
        == {torch.float32}
    metrics = json.loads((res.out_dir / "metrics.json").read_text())
    assert "asr_strict" in json.dumps(metrics)
    with pytest.raises(BackdoorlabError, match="weights_dtype.*only with LoRA"):
        from_dict(get("attack", "poison").config,
                  {"train.weights_dtype": "bfloat16", "train.lora": False})
