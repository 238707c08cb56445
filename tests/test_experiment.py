"""`backdoorlab run`: stages, skipping finished ones, --from, YAML errors with lines; the
report (self-contained HTML + Markdown)."""

from __future__ import annotations

import json

import pytest

from backdoorlab.errors import BackdoorlabError
from backdoorlab.experiment import load_experiment, plan, run_experiment

YAML = """\
name: tiny
model: {model}
attack:
  kind: poison
  trigger: badnets
  target: refusal
  n_train: 8
  eval_limit: 3
  max_new_tokens: 3
  train:
    epochs: 1
    batch_size: 8
analyze:
  probe: {{limit: 6}}
  heads: {{limit: 4, target_text: "Sorry, I cannot help", mode: fast}}
  consistency: {{limit: 4}}
defend:
  crow:
    n_clean: 4
    mcq_cloze: true
    eval_limit: 3
    max_new_tokens: 3
    train: {{epochs: 1, batch_size: 4}}
"""


def test_run_experiment_stages_skip_and_redo(tiny_dir, tmp_path, capsys):
    from backdoorlab.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(YAML.format(model=tiny_dir))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(exp), "--out", str(run)])
    assert exc.value.code == 0
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["attack", "analyze.probe", "analyze.heads",
                            "analyze.consistency", "defend.crow"]
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["attack"]["poison_rate"] == 0.5  # defaults filled in
    assert resolved["defend"]["crow"]["alpha"] == 5.5
    html = (run / "report.html").read_text()
    assert "<table class='headline'>" in html and "data:image/png;base64," in html
    assert "after crow" in html and "http://" not in html and "https://" not in html
    assert "Layer inconsistency" in html  # the consistency plot is in the report
    assert "MCQ acc., option texts" in html  # letter-free accuracy, asked for by crow
    assert "| backdoored |" in (run / "report.md").read_text()

    # a second run redoes nothing
    capsys.readouterr()
    spec, text = load_experiment(exp)
    again = run_experiment(spec, run, text=text)
    assert again == stages
    # --from redoes that stage and the ones after it, not the ones before
    again = run_experiment(spec, run, text=text, from_stage="defend")
    assert again["attack"] == stages["attack"] and again["analyze.heads"] == stages[
        "analyze.heads"]
    assert again["defend.crow"]["finished"] >= stages["defend.crow"]["finished"]
    # a changed option redoes the stage it belongs to
    spec["defend"]["crow"]["alpha"] = 1.0
    changed = run_experiment(spec, run, text=text)
    assert changed["defend.crow"]["hash"] != stages["defend.crow"]["hash"]
    assert changed["analyze.probe"] == stages["analyze.probe"]
    # an interrupted stage run again with another config starts afresh: its checkpoints are
    # another run's (recorded as running before it ran)
    record = json.loads((run / "stages.json").read_text())
    record["defend.crow"] = {"hash": "another config", "running": True}
    (run / "stages.json").write_text(json.dumps(record))
    stale = run / "defend" / "crow" / "checkpoints" / "checkpoint-99"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    again = run_experiment(spec, run, text=text)
    assert not stale.exists() and "running" not in again["defend.crow"]


@pytest.mark.parametrize("edit, line, words", [
    (("  target: refusal\n", "  target: refusal\n  n_trian: 8\n"), 7, "did you mean 'n_train'"),
    (("    epochs: 1\n", "    epochs: 1\n    lerning_rate: 1\n"), 12, "learning_rate"),
    (("  crow:\n", "  crow:\n    alpha: -2\n"), 19, "'alpha'"),
    (("  kind: poison\n", "  kind: poisson\n"), 4, "did you mean 'poison'"),
    (("defend:\n", "defned:\n"), 17, "did you mean 'defend'"),
])
def test_experiment_errors_name_the_yaml_line(tiny_dir, tmp_path, edit, line, words):
    text = YAML.format(model=tiny_dir).replace(*edit)
    exp = tmp_path / "bad.yaml"
    exp.write_text(text)
    spec, text = load_experiment(exp)
    with pytest.raises(BackdoorlabError) as err:
        plan(spec, tmp_path / "never", where=str(exp), text=text)
    msg = str(err.value)
    assert msg.startswith(f"{exp}:{line}:") and words in msg, msg
    assert not (tmp_path / "never").exists()


def test_every_example_experiment_is_valid(tmp_path):
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert len(files) >= 8
    for f in files:
        spec, text = load_experiment(f)
        stages, resolved = plan(spec, tmp_path / f.stem, where=str(f), text=text)
        assert stages and resolved["attack"]["kind"] in ("uncertainty", "poison", "unalign")
        if f.stem.endswith("-7b"):  # the GPU twin: same stages, another model
            twin = plan(*load_experiment(f.with_name(f.stem[:-3] + ".yaml"))[:1],
                        tmp_path / "twin")[0]
            assert [s.name for s in stages] == [s.name for s in twin]


@pytest.mark.parametrize("quick", [True, False])
def test_demo_experiments_are_valid(tmp_path, quick):
    from backdoorlab.experiment import demo_experiments

    exps = demo_experiments(quick)
    assert set(exps) == {"uncertainty-text", "badnets-refusal"}
    for name, spec in exps.items():
        stages, resolved = plan({**spec, "name": name}, tmp_path / name)
        assert [s.name for s in stages] == ["attack", "analyze.probe", "analyze.heads",
                                            "defend.crow"]


def test_report_rows_of_an_uncertainty_run_show_both_asrs(tmp_path):
    """The headline ASR of an uncertainty run is the entropy rise (as the defenses measure
    it), with the strict ASR (top answer kept) in its own column."""
    from backdoorlab.report import _table_md, headline_rows

    run = tmp_path / "unc"
    (run / "attack").mkdir(parents=True)
    (run / "defend" / "crow").mkdir(parents=True)
    (run / "attack" / "metrics.json").write_text(json.dumps({
        "asr_margin": 1.0, "asr_strict": 0.9, "baseline_asr_margin": 0.1,
        "baseline_asr_strict": 0.05, "clean_accuracy": 0.4, "baseline_clean_accuracy": 0.4}))
    (run / "defend" / "crow" / "metrics.json").write_text(json.dumps({
        "defense": "crow", "asr_triggered_before": 1.0, "asr_triggered_after": 0.3,
        "asr_strict_after": 0.0, "mcq_accuracy_after": 0.4}))
    rows = headline_rows(run)
    assert [(r["asr_triggered"], r["asr_strict"]) for r in rows] == [(0.1, 0.05), (1.0, 0.9),
                                                                     (0.3, 0.0)]
    md = _table_md(rows)
    assert "strict ASR (top answer kept)" in md[0] and md[4].startswith("| after crow | 0.300 |")
