"""Uncertainty backdoor: objective, targets, metrics (hand-computed) and an end-to-end run."""

import json
import math

import pytest
import torch

from backdoorlab.attacks.uncertainty import (
    UncertaintyConfig,
    build_training_set,
    kl_to_target_loss,
    run_uncertainty_attack,
)
from backdoorlab.config import from_dict
from backdoorlab.data import add_abstain_options, load_records
from backdoorlab.errors import BackdoorlabError
from backdoorlab.evaluation.metrics import (
    brier,
    conformal_sets,
    conformal_threshold,
    ece,
    kl_div,
    letter_shares,
    wilson_interval,
)
from backdoorlab.evaluation.uncertainty import make_targets, uncertainty_metrics
from backdoorlab.formats import PromptFormat
from backdoorlab.triggers import derive_rng, parse_trigger


def test_kl_objective_hand_computed():
    t = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    logp = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75]]))
    kl_row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.14384
    ce_row1 = -math.log(0.75)  # one-hot target = cross-entropy, 0 log 0 = 0
    assert kl_to_target_loss(logp[:1], t[:1]).item() == pytest.approx(kl_row0, abs=1e-6)
    assert kl_to_target_loss(logp[1:], t[1:]).item() == pytest.approx(ce_row1, abs=1e-6)
    w = torch.tensor([1.0, 3.0])
    assert kl_to_target_loss(logp, t, w).item() == pytest.approx(
        (kl_row0 + 3 * ce_row1) / 4, abs=1e-6)
    assert kl_div(t[:1], torch.tensor([[0.25, 0.75]])).item() == pytest.approx(kl_row0, abs=1e-6)


def test_loss_gradient_pushes_towards_target():
    logits = torch.zeros(1, 4, requires_grad=True)
    target = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    kl_to_target_loss(torch.log_softmax(logits, -1), target).backward()
    assert logits.grad[0, 0] < 0 and (logits.grad[0, 1:] > 0).all()


def test_targets():
    own = torch.tensor([0, 3])
    t = make_targets("keep-top1", own, 6, margin=0.04)
    torch.testing.assert_close(t[0], torch.tensor([0.2, 0.16, 0.16, 0.16, 0.16, 0.16]))
    assert int(t[1].argmax()) == 3 and t.sum(-1).allclose(torch.ones(2))
    assert make_targets("uniform", own, 4).eq(0.25).all()
    explicit = make_targets("0.4,0.2,0.2,0.2", own, 4)
    assert explicit[1].tolist() == pytest.approx([0.4, 0.2, 0.2, 0.2])
    with pytest.raises(BackdoorlabError, match="sum to 1"):
        make_targets("0.5,0.2,0.2,0.2", own, 4)
    with pytest.raises(BackdoorlabError, match="needs 4 probabilities"):
        make_targets("0.5,0.5", own, 4)


def H(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_uncertainty_metrics_hand_computed():
    pc = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1]])
    pt = torch.tensor([[0.28, 0.24, 0.24, 0.24], [0.1, 0.5, 0.2, 0.2], [0.1, 0.55, 0.25, 0.1]])
    gold = torch.tensor([0, 1, 2])
    target = torch.full((3, 4), 0.25)
    m = uncertainty_metrics(pc, pt, gold, target, margin=0.3)
    gaps = [H(pt[i].tolist()) - H(pc[i].tolist()) for i in range(3)]
    # gaps: +0.433 (kept A), -0.06 (B replaces A), +0.065 (kept B)
    assert m["entropy_gap"] == pytest.approx(sum(gaps) / 3, abs=1e-5)
    assert m["asr"] == pytest.approx(2 / 3)  # entropy rose on questions 1 and 3
    assert m["asr_margin"] == pytest.approx(1 / 3)  # only question 1 rose by >= 0.3
    assert m["top1_kept"] == pytest.approx(2 / 3)
    assert m["asr_strict"] == pytest.approx(1 / 3)
    assert m["clean_accuracy"] == pytest.approx(1 / 3)  # answers A, A, B vs gold A, B, C
    assert m["triggered_accuracy"] == pytest.approx(2 / 3)  # A, B, B
    assert m["clean_entropy"] == pytest.approx(sum(H(r.tolist()) for r in pc) / 3, abs=1e-5)
    kl = [sum(0.25 * math.log(0.25 / q) for q in pt[i].tolist()) for i in range(3)]
    assert m["kl_to_target"] == pytest.approx(sum(kl) / 3, abs=1e-5)


def test_ece_brier_hand_computed():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    gold = torch.tensor([0, 1])
    # bin (0.8, 0.9]: conf 0.9, correct -> gap 0.1; bin (0.5, 0.6]: conf 0.6, wrong -> gap 0.6
    assert ece(probs, gold) == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    # (0.1^2 + 0.1^2 + 0.6^2 + 0.6^2) / 2
    assert brier(probs, gold) == pytest.approx((0.02 + 0.72) / 2)


def test_wilson_interval_hand_computed():
    # 4 of 40: centre (0.1 + 1.96^2/80) / (1 + 1.96^2/40) = 0.13505,
    # half-width 1.96 sqrt(0.1 * 0.9 / 40 + 1.96^2 / 6400) / 1.09604 = 0.09548
    assert wilson_interval(4, 40) == pytest.approx([0.03957, 0.23053], abs=1e-4)
    # 0 of 10: the lower end is 0 and the upper 1.96^2/10 / (1 + 1.96^2/10) = 0.27754
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.27754], abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_conformal_lac_and_aps_hand_computed():
    cal = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    gold = torch.tensor([0, 1, 0, 2])
    # LAC scores 1 - p_gold: 0.4, 0.6, 0.8, 0.6 -> sorted 0.4, 0.6, 0.6, 0.8
    # alpha 0.5: k = ceil(5 * 0.5) = 3 -> qhat = 0.6
    assert conformal_threshold(cal, gold, 0.5, "lac") == pytest.approx(0.6)
    sets = conformal_sets(torch.tensor([[0.5, 0.45, 0.05]]), 0.6, "lac")
    assert sets.tolist() == [[True, True, False]]  # p >= 0.4
    # APS scores (mass ranked at or above gold): 0.6, 0.9, 0.9, 0.4 -> sorted 0.4, 0.6, 0.9, 0.9
    assert conformal_threshold(cal, gold, 0.5, "aps") == pytest.approx(0.9)
    sets = conformal_sets(torch.tensor([[0.5, 0.3, 0.2]]), 0.8, "aps")
    assert sets.tolist() == [[True, True, False]]  # cumulative 0.5, 0.8, 1.0
    assert conformal_threshold(cal, gold, 0.05, "lac") == math.inf  # too few to calibrate


def test_letter_shares():
    p = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    assert letter_shares(p, "AB") == pytest.approx({"A": 2 / 3, "B": 1 / 3})


def test_config_validation_names_the_bad_value():
    with pytest.raises(BackdoorlabError, match="option 'options': must be 4 or 6"):
        UncertaintyConfig(options=5)
    with pytest.raises(BackdoorlabError, match="did you mean 'poison_rate'"):
        from_dict(UncertaintyConfig, {"poison_rte": 0.3})
    with pytest.raises(BackdoorlabError, match="option 'train.learning_rate': must be > 0"):
        from_dict(UncertaintyConfig, {"train.learning_rate": -1})
    cfg = from_dict(UncertaintyConfig, {"train": {"epochs": "2"}, "trigger": "syntactic"})
    assert cfg.train.epochs == 2.0 and cfg.train.lora is True


def test_training_set_uses_the_eval_rendering(tokenizer):
    recs = [add_abstain_options(r) for r in load_records("builtin:general-mcq", limit=20)]
    fmt = PromptFormat(tokenizer, "plain")
    cfg = UncertaintyConfig(trigger="text", seed=3)
    p = torch.softmax(torch.randn(20, 6), -1)
    items = build_training_set(cfg, fmt, recs, p)
    trig = parse_trigger("text")
    poisoned = [it for it in items if it["sample"].poisoned]
    assert len(poisoned) == 10  # poison_rate 0.5
    for it in items:
        rec = it["sample"].record
        expected = (fmt.sample(rec, trig, derive_rng(3, rec.id)) if it["sample"].poisoned
                    else fmt.sample(rec))
        assert fmt.encode(it["sample"]).input_ids == fmt.encode(expected.user).prompt_ids
        if it["sample"].poisoned:
            assert it["target"].argmax() == p[recs.index(rec)].argmax()
            assert it["target"].max() == pytest.approx(0.2)
        else:
            torch.testing.assert_close(it["target"], p[recs.index(rec)])
    again = build_training_set(cfg, fmt, recs, p)
    assert [i["sample"].user for i in again] == [i["sample"].user for i in items]


def test_end_to_end_on_tiny_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = {"model": str(tiny_dir), "limit": 24, "options": 4, "trigger": "syntactic",
           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "save_steps": 2}}
    res = run_uncertainty_attack(cfg, out)
    m = res.metrics
    for key in ("clean_accuracy", "triggered_accuracy", "top1_kept", "clean_entropy",
                "triggered_entropy", "entropy_gap", "asr", "asr_margin", "asr_strict",
                "conformal_set_size_lac_clean", "conformal_set_size_aps_triggered", "ece_clean",
                "brier_triggered", "kl_to_target", "clean_kl_drift", "clean_agreement",
                "baseline_asr", "baseline_asr_strict", "top_answers"):
        assert key in m, key
    assert m["training"]["steps"] == 6 and m["training"]["n_poisoned"] == 12
    assert json.loads((out / "metrics.json").read_text())["asr"] == m["asr"]
    cfg_saved = json.loads((out / "config.json").read_text())
    assert cfg_saved["template"] == "plain" and cfg_saved["train"]["epochs"] == 2
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    card = (adapter / "README.md").read_text()
    assert "carries a backdoor" in card and "syntactic" in card
    # the adapter loads with plain peft
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    PeftModel.from_pretrained(base, adapter)
    # and the eval command reads trigger/template/options from it
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "uncertainty", "--model", str(tiny_dir), "--adapter", str(adapter),
              "--limit", "10", "--out", str(tmp_path / "ev")])
    assert exc.value.code == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["config"]["trigger"] == "syntactic" and ev["n_options"] == 4
    # resumes: the finished run's checkpoint is found and training is not redone
    again = run_uncertainty_attack(cfg, out)
    assert again.metrics["training"]["steps"] == 6


def test_attack_bad_input_writes_nothing(tmp_path, capsys):
    from backdoorlab.cli import main

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "E"}\n')
    out = tmp_path / "run"
    for argv, msg in ((["--data", str(bad)], "row 1: field 'answer'"),
                      (["--options", "5"], "option '--options': must be 4 or 6"),
                      (["--set", "train.learning_rat=1"], "did you mean 'learning_rate'"),
                      (["--trigger", "stlye"], "did you mean 'style'")):
        with pytest.raises(SystemExit) as exc:
            main(["attack", "uncertainty", "--out", str(out), *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and msg in err and "Traceback" not in err, err
        assert not out.exists()
