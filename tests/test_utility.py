"""``eval utility``: lm-evaluation-harness tasks on any model, offline on a local task file;
the accuracy checked against the model's own log-likelihoods computed here, the interval by
hand, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from backdoorlab.evaluation.utility import task_metrics, task_names

pytest.importorskip("lm_eval")

ROWS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Berlin", "Rome"],
     "answer": 0},
    {"question": "What colour is the sky?", "choices": ["green", "blue", "red"], "answer": 1},
    {"question": "How many legs has a spider?", "choices": ["six", "four", "eight"],
     "answer": 2},
    {"question": "Which is a fruit?", "choices": ["apple", "stone", "chair"], "answer": 0},
    {"question": "What do bees make?", "choices": ["milk", "honey", "silk"], "answer": 1},
]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    (d / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (d / "qa.yaml").write_text(
        "task: bl_tiny_qa\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {d / 'qa.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{answer}}\"\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return d


def _main(args):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def _loglik(model, tok, context: str, continuation: str) -> float:
    """Sum of the continuation's token log-probabilities after the context."""
    ctx = tok(context, add_special_tokens=False).input_ids
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    cont = whole[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0]
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def test_task_metrics_by_hand():
    res = {"alias": "t", "acc,none": 0.6, "acc_stderr,none": 0.2449, "acc_norm,none": 0.4,
           "exact_match,strict": 0.5}
    samples = [{"acc": 1.0, "acc_norm": 0.0, "exact_match": 0.5}, {"acc": 1.0, "acc_norm": 1.0},
               {"acc": 0.0, "acc_norm": 1.0}, {"acc": 1.0, "acc_norm": 0.0},
               {"acc": 0.0, "acc_norm": 0.0}]
    m = task_metrics(res, samples)
    assert m["acc"] == 0.6 and m["acc_stderr"] == 0.2449 and m["n"] == 5
    assert m["acc_hits"] == 3 and m["acc_norm_hits"] == 2
    # Wilson 95% for 3/5: centre (3 + 1.92) / 8.84, half-width 1.96 sqrt(0.24*5 + 0.96) / 8.84
    lo, hi = m["acc_ci95"]
    assert lo == pytest.approx(0.2307, abs=1e-3) and hi == pytest.approx(0.8824, abs=1e-3)
    assert "exact_match[strict]" in m and "exact_match[strict]_ci95" not in m
    assert task_names(" a, ,b ") == ["a", "b"]


def test_accuracy_is_the_models_own_loglikelihood_pick(tiny_dir, task_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "u"
    assert _main(["eval", "utility", "--model", str(tiny_dir), "--tasks", "bl_tiny_qa",
                  "--include-path", str(task_dir), "--batch-size", "2", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["tasks"]["bl_tiny_qa"]
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    picks = []
    for r in ROWS:
        ll = [_loglik(model, tok, f"Question: {r['question']}\nAnswer:", " " + c)
              for c in r["choices"]]
        picks.append(max(range(len(ll)), key=ll.__getitem__))
    hits = sum(p == r["answer"] for p, r in zip(picks, ROWS))
    assert m["n"] == len(ROWS) and m["acc_hits"] == hits
    assert m["acc"] == pytest.approx(hits / len(ROWS))
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in rows] == list(range(len(ROWS)))
    for r, pick in zip(rows, picks):
        lls = [x[0] for x in r["responses"]]
        assert max(range(len(lls)), key=lls.__getitem__) == pick


def test_an_adapter_changes_the_scores(tiny_dir, task_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False))
    for p in peft.parameters():
        if p.requires_grad:
            p.data.mul_(40)
    peft.save_pretrained(tmp_path / "a")
    common = ["--model", str(tiny_dir), "--tasks", "bl_tiny_qa", "--include-path", str(task_dir)]
    assert _main(["eval", "utility", *common, "--out", str(tmp_path / "plain")]) == 0
    assert _main(["eval", "utility", *common, "--adapter", str(tmp_path / "a"),
                  "--out", str(tmp_path / "lora")]) == 0

    def lls(d):
        return [r["responses"] for r in map(json.loads,
                                              (d / "samples.jsonl").read_text().splitlines())]

    assert lls(tmp_path / "plain") != lls(tmp_path / "lora")


@pytest.mark.parametrize("args, says", [
    (["--tasks", ""], "give at least one task"),
    (["--tasks", "bl_tiny_qx"], "did you mean 'bl_tiny_qa'"),
    (["--tasks", "bl_tiny_qa", "--include-path", "/no/such/dir"], "no such directory"),
    (["--tasks", "bl_tiny_qa", "--repaired", "x", "--adapter", "y"], "not with --adapter"),
    (["--tasks", "bl_tiny_qa", "--limit", "0"], "limit"),
])
def test_bad_input_is_one_line(args, says, tiny_dir, task_dir, tmp_path, capsys):
    full = ["eval", "utility", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), *args]
    if "--include-path" not in args:
        full += ["--include-path", str(task_dir)]
    assert _main(full) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_without_the_extra_the_command_says_how_to_install_it(monkeypatch, tiny_dir, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import fails as if not installed
    assert _main(["eval", "utility", "--model", str(tiny_dir), "--tasks", "x"]) == 2
    assert "pip install 'backdoorlab[utility]'" in capsys.readouterr().err


def test_eval_defense_scores_the_tasks_before_and_after_and_the_report_shows_them(
        tiny_dir, task_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backdoorlab.report import write_report

    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False))
    peft.save_pretrained(tmp_path / "a")
    q = tmp_path / "study" / "q"
    assert _main(["defend", "quantize", "--out", str(q), "--bits", "8", "--model",
                  str(tiny_dir), "--adapter", str(tmp_path / "a"), "--set", "trigger=badnets",
                  "--set", "target=refusal", "--set", "eval_limit=2", "--set",
                  "max_new_tokens=3", "--set", "mcq_limit=3"]) == 0
    assert _main(["eval", "defense", "--repaired", str(q), "--limit", "2", "--utility-tasks",
                  "bl_tiny_qa", "--include-path", str(task_dir)]) == 0
    m = json.loads((q / "eval_defense.json").read_text())["tasks"]["bl_tiny_qa"]
    assert m["before"]["n"] == m["after"]["n"] == len(ROWS)
    assert 0 <= m["after"]["acc"] <= 1 and "acc_ci95" in m["before"]
    _, md = write_report([tmp_path / "study"], tmp_path / "report")
    text = md.read_text()
    assert "Utility (lm-evaluation-harness tasks)" in text
    line = next(x for x in text.splitlines() if x.startswith("| q | bl_tiny_qa | acc |"))
    assert f"{m['before']['acc']:.3f} [" in line and f"{m['after']['acc']:.3f} [" in line
    # the extra options alone are refused; a misspelt task before anything is scored again
    assert _main(["eval", "defense", "--repaired", str(q), "--utility-limit", "2"]) == 2
    written = (q / "eval_defense.json").stat().st_mtime_ns
    assert _main(["eval", "defense", "--repaired", str(q), "--utility-tasks", "bl_tiny_qx",
                  "--include-path", str(task_dir)]) == 2
    assert (q / "eval_defense.json").stat().st_mtime_ns == written
