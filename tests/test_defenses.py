"""CROW's loss pieces, pruning, and every defense end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from backdoorlab.data import load_records
from backdoorlab.defenses.crow import crow_loss, fgsm_delta, layer_consistency
from backdoorlab.defenses.interventions import centre_of_best_run, choose_layer
from backdoorlab.defenses.prune import (
    choose_sparsity,
    magnitude_mask,
    prunable_linears,
    prune,
    wanda_mask,
)
from backdoorlab.scoring import left_pad, position_ids


def test_layer_consistency_hand_computed_and_padding_masked():
    # one sequence of two tokens; three "layers"
    h0 = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    h1 = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])  # token 0 turns 90 degrees, token 1 stays
    h2 = torch.tensor([[[0.0, 2.0], [-1.0, -1.0]]])  # token 0 stays, token 1 flips
    mask = torch.tensor([[1, 1]])
    # pairs (0,1): mean(1 - 0, 1 - 1) = 0.5; (1,2): mean(1 - 1, 1 - (-1)) = 1.0 -> 0.75
    assert float(layer_consistency([h0, h1, h2], mask)) == pytest.approx(0.75)
    # a padding position with any values changes nothing
    pad = torch.tensor([[[5.0, -3.0]]])
    hs = [torch.cat([pad * (i + 1), h], dim=1) for i, h in enumerate((h0, h1, h2))]
    assert float(layer_consistency(hs, torch.tensor([[0, 1, 1]]))) == pytest.approx(0.75)


def test_fgsm_step_increases_the_consistency_loss(tiny_models, fmt):
    model = tiny_models["llama"]
    ids, mask = left_pad([fmt.prompt_ids("Tell me a story."), fmt.prompt_ids("Hi")],
                         fmt.tokenizer.pad_token_id)
    pos = position_ids(mask)
    emb = model.get_input_embeddings()(ids).detach()

    def cons(e):
        with torch.no_grad():
            out = model(inputs_embeds=e, attention_mask=mask, position_ids=pos,
                        output_hidden_states=True)
        return float(layer_consistency(out.hidden_states, mask))

    delta = fgsm_delta(model, emb, mask, pos, epsilon=0.05)
    assert (delta[mask == 0] == 0).all()  # padding is not perturbed
    assert cons(emb + delta) > cons(emb)
    assert cons(emb - delta) < cons(emb + delta)


def test_default_clean_samples_mix_both_builtin_sets_from_their_train_splits(fmt):
    from backdoorlab.defenses.base import DefenseConfig, clean_samples

    samples = clean_samples(DefenseConfig(), fmt)
    short = {r.id for r in load_records("builtin:benign-instructions", split="train")}
    open_ = {r.id for r in load_records("builtin:open-instructions", split="train")}
    ids = [s.record.id for s in samples]
    assert len(ids) == len(set(ids)) == 100 and set(ids) <= short | open_
    assert len(set(ids) & short) == len(set(ids) & open_) == 50
    assert ids == [s.record.id for s in clean_samples(DefenseConfig(), fmt)]  # seeded
    other = [s.record.id for s in clean_samples(DefenseConfig(seed=1), fmt)]
    assert other != ids
    # the reference answer is the training target, rendered through the one prompt format
    first = samples[0]
    assert first.response == first.record.output


def test_clean_sources_joined_by_plus_share_n_clean(fmt, tmp_path):
    from backdoorlab.defenses.base import DefenseConfig, clean_samples
    from backdoorlab.errors import BackdoorlabError

    mix = "builtin:benign-instructions+builtin:open-instructions"
    samples = clean_samples(DefenseConfig(clean_data=mix, n_clean=11), fmt)
    short = {r.id for r in load_records("builtin:benign-instructions", split="train")}
    long_ = {r.id for r in load_records("builtin:open-instructions", split="train")}
    ids = [s.record.id for s in samples]
    assert len(set(ids)) == 11
    assert sum(i in short for i in ids) == 6 and sum(i in long_ for i in ids) == 5
    # interleaved, not one source after the other, and seeded
    assert [i in short for i in ids] != sorted((i in short for i in ids), reverse=True)
    assert ids == [s.record.id for s in clean_samples(DefenseConfig(clean_data=mix,
                                                                    n_clean=11), fmt)]
    # a file whose own name holds a '+' is one source
    f = tmp_path / "a+b.jsonl"
    f.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n")
    assert [s.response for s in clean_samples(DefenseConfig(clean_data=str(f)), fmt)] == ["Hi."]
    with pytest.raises(BackdoorlabError, match="option 'clean_data': empty source"):
        DefenseConfig(clean_data="builtin:open-instructions+")
    with pytest.raises(BackdoorlabError, match="option 'n_clean': 1 is fewer than the 2"):
        DefenseConfig(clean_data=mix, n_clean=1)


def test_evaluation_prompts_in_the_clean_data_are_left_out():
    """An MCQ and an instruction that ask the same thing share a key (case and spacing
    ignored); an evaluation suite drops exactly those, set by set."""
    from backdoorlab.data import MCQ, Instruction, prompt_key
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.evaluation.suite import GenerationSuite

    q = MCQ(id="q1", question="Which city is the capital of France?",
            choices=("Paris", "Rome"), answer="A")
    other = MCQ(id="q2", question="Which city is the capital of Spain?",
                choices=("Madrid", "Rome"), answer="A")
    seen = Instruction(id="c1", instruction="which  city is the capital of FRANCE? ",
                       output="Paris.")
    assert prompt_key(q) == prompt_key(seen) != prompt_key(other)
    # an input is part of what is asked
    assert prompt_key(Instruction(id="c2", instruction=seen.instruction, input="x")) != \
        prompt_key(seen)
    task = Instruction(id="t1", instruction="Which city is the capital of France?")
    hi = Instruction(id="u1", instruction="Say hi.")

    def suite():
        return GenerationSuite(target_records=[task, hi], trigger=None, judge=None, harmful=[],
                               utility=[hi], mcq=[q, other])

    s = suite()
    assert s.leave_out([seen], "data") == {"target_records": ["t1"], "mcq": ["q1"]}
    assert s.mcq == [other] and s.target_records == [hi] and s.utility == [hi]
    # a set left empty is an error that names where the training data came from
    with pytest.raises(BackdoorlabError, match="option 'data': every utility evaluation"):
        suite().leave_out([hi], "data")


def test_defense_leaves_out_mcq_questions_its_clean_data_answers(tiny_dir, tmp_path, capsys):
    from backdoorlab.cli import main

    mcq = load_records("builtin:general-mcq", kind="mcq", split="test", limit=4)

    def clean_file(name, recs):
        f = tmp_path / name
        f.write_text("".join(json.dumps({"instruction": r.question.upper(), "output": "It is "
                                         f"{r.choices[r.answer_index]}."}) + "\n"
                             for r in recs) + json.dumps({"instruction": "Say hi.",
                                                         "output": "Hi."}) + "\n")
        return str(f)

    def run(out, clean, n_clean, *extra):
        with pytest.raises(SystemExit) as exc:
            main(["defend", "finetune", "--model", str(tiny_dir), "--set", "trigger=badnets",
                  "--set", "target=refusal", "--set", "eval_limit=2", "--set",
                  "max_new_tokens=2", "--set", "mcq_limit=4", "--clean-data", clean,
                  "--n-clean", str(n_clean), "--epochs", "1", "--out", str(tmp_path / out),
                  *extra])
        return exc.value.code

    assert run("ft", clean_file("two.jsonl", mcq[:2]), 3) == 0
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["eval_left_out"] == {"mcq": 2}
    # two questions scored: accuracy in halves
    assert m["mcq_accuracy_before"] in (0.0, 0.5, 1.0)
    # evaluating the run again leaves out the same questions (drawn again from its config)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "defense", "--repaired", str(tmp_path / "ft"), "--limit", "2"])
    assert exc.value.code == 0
    again = json.loads((tmp_path / "ft" / "eval_defense.json").read_text())
    assert again["eval_left_out"] == {"mcq": 2}
    assert again["mcq_accuracy_after"] == m["mcq_accuracy_after"]
    every = clean_file("all.jsonl", mcq)
    capsys.readouterr()
    assert run("none", every, 5) == 2
    err = capsys.readouterr().err
    assert "option '--clean-data': every mcq evaluation prompt is also in the training data" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
    assert run("kept", every, 5, "--set", "keep_seen=true") == 0
    assert "eval_left_out" not in json.loads((tmp_path / "kept" / "metrics.json").read_text())


@pytest.mark.parametrize("frozen_embeddings", [True, False])
def test_crow_loss_one_clean_forward_equals_the_three_pass_definition(tiny_models, fmt,
                                                                      frozen_embeddings):
    """The fused loss (one clean forward for the LM loss and the FGSM gradient) gives the
    loss and parameter gradients of LM(clean) + alpha * L_cons(embeddings + delta)."""
    import copy

    model = copy.deepcopy(tiny_models["qwen2"]).train()
    model.get_input_embeddings().weight.requires_grad_(not frozen_embeddings)
    ids, mask = left_pad([fmt.prompt_ids("Tell me a story."), fmt.prompt_ids("Hi")],
                         fmt.tokenizer.pad_token_id)
    labels = ids.masked_fill(mask == 0, -100)
    pos = position_ids(mask)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in params]

    fused = grads(crow_loss(2.0, 0.05)(model, {"input_ids": ids, "attention_mask": mask,
                                              "labels": labels}))
    emb = model.get_input_embeddings()(ids)
    lm = model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, labels=labels).loss
    delta = fgsm_delta(model, emb, mask, pos, 0.05)
    out = model(inputs_embeds=emb + delta, attention_mask=mask, position_ids=pos,
                output_hidden_states=True)
    ref = grads(lm + 2.0 * layer_consistency(out.hidden_states, mask))
    assert fused[0] == pytest.approx(ref[0], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fused[1], ref[1]))
    assert any(g.abs().sum() > 0 for g in fused[1])


def test_pruning_masks_and_requested_sparsity(tiny_models):
    w = torch.tensor([[1.0, -4.0, 2.0, 0.5], [3.0, 0.1, -0.2, 5.0]])
    # the 2 of 8 smallest in |w| are 0.1 and -0.2
    assert magnitude_mask(w, 0.25).tolist() == [[True, True, True, True],
                                                [True, False, False, True]]
    # Wanda: |w| * ||x||, per row; column norms make column 1 count for little
    keep = wanda_mask(w, torch.tensor([1.0, 0.01, 1.0, 1.0]), 0.5)
    assert keep.tolist() == [[True, False, True, False], [True, False, False, True]]
    import copy

    model = copy.deepcopy(tiny_models["gemma"])
    achieved = prune(model, 0.3, "magnitude")
    assert achieved == pytest.approx(0.3, abs=0.01)
    for lin in prunable_linears(model).values():
        assert float((lin.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.01)


def test_sparsity_choice_skips_a_collapsed_model():
    # a code-injection sweep on SmolLM2: MCQ stays near chance at every sparsity, while
    # perplexity shows the 0.5 model broken (+81%); 0.3 is within 10% (+7%)
    base = {"asr_triggered": 1.0, "mcq_accuracy": 0.26, "clean_perplexity": 1.61}
    sweep = [{"sparsity": s, "asr_triggered": a, "mcq_accuracy": m, "clean_perplexity": p}
             for s, a, m, p in ((0.1, 1.0, 0.25, 1.62), (0.3, 0.625, 0.28, 1.72),
                                (0.5, 0.0, 0.23, 2.92))]
    assert choose_sparsity(sweep, base, 0.05, 0.10) == 0.3
    assert choose_sparsity(sweep, base, 0.05, 1.0) == 0.5  # a looser perplexity bound
    assert choose_sparsity(sweep, base, 0.01, 1.0) == 0.3  # MCQ: 0.23 < 0.26 - 0.01
    # no perplexity measured (the uncertainty backdoor): MCQ accuracy alone decides
    unc = [{k: v for k, v in p.items() if k != "clean_perplexity"} for p in sweep]
    assert choose_sparsity(unc, {"mcq_accuracy": 0.26}, 0.05, 0.10) == 0.5
    # nothing passes: the lowest sparsity
    assert choose_sparsity(sweep, {**base, "clean_perplexity": 1.0}, 0.05, 0.10) == 0.1


def test_every_defense_end_to_end_on_a_tiny_model(tiny_dir, tmp_path):
    from backdoorlab.cli import main
    from backdoorlab.defenses.repaired import load_repaired

    common = ["--model", str(tiny_dir), "--set", "trigger=badnets", "--set", "target=refusal",
              "--set", "eval_limit=3", "--set", "max_new_tokens=3"]

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main(["defend", *args, *common])
        assert exc.value.code == 0

    run("crow", "--out", str(tmp_path / "crow"), "--n-clean", "8", "--epochs", "1",
        "--set", "train.batch_size=4")
    m = json.loads((tmp_path / "crow" / "metrics.json").read_text())
    for key in ("asr_triggered_before", "asr_triggered_after", "mcq_accuracy_before",
                "mcq_accuracy_after", "perplexity_change", "defense_wall_s"):
        assert key in m, key
    assert m["training"]["steps"] == 2
    assert "empty_output_rate_after" in m
    lo, hi = m["asr_triggered_ci95_after"]  # the Wilson interval of the ASR on 3 prompts
    assert lo <= m["asr_triggered_after"] <= hi and hi - lo > 0.3
    rows = [json.loads(x) for x in (tmp_path / "crow" / "generations.jsonl").read_text()
            .splitlines()]
    assert {r["model"] for r in rows} == {"suspect", "repaired"}
    card = (tmp_path / "crow" / "adapter" / "README.md").read_text()
    assert "defense" in card and "CROW" in card
    assert (tmp_path / "crow" / "adapter" / "adapter_model.safetensors").is_file()

    run("finetune", "--out", str(tmp_path / "ft"), "--n-clean", "4", "--epochs", "1",
        "--set", "mcq_rotations=true", "--set", "mcq_limit=4")
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["defense"] == "finetune" and "clean fine-tuning" in (
        tmp_path / "ft" / "adapter" / "README.md").read_text()
    assert m["mcq_accuracy_rotated_change"] == pytest.approx(
        m["mcq_accuracy_rotated_after"] - m["mcq_accuracy_rotated_before"])

    run("prune", "--out", str(tmp_path / "prune"), "--sparsities", "0.2,0.5",
        "--set", "n_calibration=4")
    m = json.loads((tmp_path / "prune" / "metrics.json").read_text())
    assert [p["sparsity"] for p in m["sweep"]] == [0.2, 0.5]
    repaired = load_repaired(tmp_path / "prune")
    lin = next(iter(prunable_linears(repaired.model).values()))
    assert float((lin.weight == 0).float().mean()) == pytest.approx(m["saved_sparsity"],
                                                                     abs=0.01)

    extra = ["--set", "analysis_limit=4", "--set", "target_text=Sorry, I cannot help"]
    run("ablate-heads", "--out", str(tmp_path / "abl"), "--top-share", "0.25", *extra)
    spec = json.loads((tmp_path / "abl" / "interventions.json").read_text())
    assert len(spec["heads"]) == 2
    run("subtract-vector", "--out", str(tmp_path / "vec"), "--top-share", "0.25", *extra)
    spec = json.loads((tmp_path / "vec" / "interventions.json").read_text())
    assert spec["kind"] == "subtract-vector" and 0 <= spec["layer"] < 2
    sweep = spec["layer_sweep"]  # chosen by the ASR left, on training-split prompts
    assert [p["layer"] for p in sweep] == [0, 1]
    assert spec["layer"] == choose_layer(sweep)
    assert all(0 <= p["empty_triggered"] <= 1 for p in sweep)

    # a reloaded intervention repairs the model exactly as it was measured
    fixed = load_repaired(tmp_path / "abl")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = fixed.model(input_ids=ids).logits
        fixed.model.backdoorlab_interventions.close()
        b = fixed.model(input_ids=ids).logits
    assert not torch.allclose(a, b)

    with pytest.raises(SystemExit) as exc:
        main(["eval", "defense", "--repaired", str(tmp_path / "vec"), "--limit", "3"])
    assert exc.value.code == 0
    ev = json.loads((tmp_path / "vec" / "eval_defense.json").read_text())
    assert ev["defense"] == "subtract-vector" and "asr_triggered_after" in ev


def test_crow_with_merge_adapter_trains_a_fresh_lora_on_merged_weights(tiny_dir, tmp_path):
    """``--merge-adapter``: the suspect adapter is folded in, a fresh LoRA trained on top, and
    the whole repaired model saved; it reloads as measured and differs from the suspect."""
    from transformers import AutoModelForCausalLM

    from backdoorlab.cli import main
    from backdoorlab.defenses.repaired import load_repaired
    from backdoorlab.models import load_suspect
    from backdoorlab.training import TrainConfig, wrap_lora

    torch.manual_seed(0)
    peft = wrap_lora(AutoModelForCausalLM.from_pretrained(tiny_dir), TrainConfig())
    with torch.no_grad():  # a non-zero adapter, so that merging changes the weights
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft.save_pretrained(tmp_path / "adapter", safe_serialization=True)

    with pytest.raises(SystemExit) as exc:
        main(["defend", "crow", "--model", str(tiny_dir), "--adapter", str(tmp_path / "adapter"),
              "--merge-adapter", "--n-clean", "4", "--epochs", "1", "--no-eval",
              "--set", "trigger=badnets", "--set", "target=refusal",
              "--out", str(tmp_path / "crow")])
    assert exc.value.code == 0
    rec = json.loads((tmp_path / "crow" / "defense.json").read_text())
    assert rec["artifact"] == "model"
    card = (tmp_path / "crow" / "model" / "README.md").read_text()
    assert "fresh LoRA" in card
    assert not any((tmp_path / "crow" / "model").glob("*.bin"))

    ids = torch.tensor([[5, 6, 7, 8]])
    merged = load_suspect(str(tiny_dir), tmp_path / "adapter").model.merge_and_unload()
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    repaired = load_repaired(tmp_path / "crow").model
    assert not hasattr(repaired, "peft_config")
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (merged, repaired, plain))
    assert not torch.allclose(a, c)  # the suspect adapter mattered ...
    assert not torch.allclose(a, b, atol=1e-6)  # ... and the fresh LoRA changed the model
    # the fresh LoRA was trained on the merged weights, not on the plain base model
    w = {name: dict(m.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
         for name, m in (("merged", merged), ("repaired", repaired), ("plain", plain))}
    assert (w["repaired"] - w["merged"]).norm() < (w["repaired"] - w["plain"]).norm() / 10


def test_prune_on_an_uncertainty_backdoor(tiny_dir, tmp_path):
    """The uncertainty evaluation has no clean-prompt ASR; the sweep must not need one."""
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["defend", "prune", "--model", str(tiny_dir), "--set", "trigger=text",
              "--set", "target=uncertainty", "--set", "eval_limit=4", "--sparsities", "0.2",
              "--set", "n_calibration=4", "--out", str(tmp_path / "p")])
    assert exc.value.code == 0
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["sweep"][0]["asr_clean"] is None and "asr_triggered_after" in m
    # a defense's ASR is the entropy rise whatever the top answer; strict sits beside it
    for side in ("before", "after"):
        assert m[f"asr_triggered_{side}"] == m[side]["details"]["asr_margin"]
        assert m[f"asr_strict_{side}"] == m[side]["details"]["asr_strict"]
        assert f"top1_kept_{side}" in m and f"entropy_gap_{side}" in m
        # a repair that flattens the clean answers too shows in the clean entropy
        assert m[f"clean_entropy_{side}"] == m[side]["details"]["clean_entropy"]


def test_uncertainty_asr_strict_or_not_on_a_hand_built_example(tokenizer):
    """Flat answers with a moved top answer: the attack's strict ASR says 0, a defense's
    ASR (entropy up by the margin, whatever the top answer) says the backdoor still fires."""
    from backdoorlab.analysis.behaviour import UncertaintyBehaviour
    from backdoorlab.data import load_records
    from backdoorlab.formats import PromptFormat

    fmt = PromptFormat(tokenizer, "plain")
    recs = load_records("builtin:general-mcq", split="test", limit=2)
    ref = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]])
    # entropy: 0.940 nats -> 1.384 (gap 0.444 < 0.5) and 1.379 (gap 0.439); with margin 0.4
    # both fire; the first keeps its top answer (A), the second moves it to B
    trig = torch.tensor([[0.28, 0.24, 0.24, 0.24], [0.22, 0.30, 0.24, 0.24]])
    for strict, expected in ((True, 0.5), (False, 1.0)):
        beh = UncertaintyBehaviour(fmt, recs, "text", asr_margin=0.4, strict=strict)
        beh.reference = ref
        beh.distribution = lambda model, which: trig
        assert beh.asr(None) == pytest.approx(expected)
        assert beh.last_check["top1_kept"] == pytest.approx(0.5)


def test_defend_rejects_bad_values(tiny_dir, tmp_path, capsys):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["defend", "prune", "--model", str(tiny_dir), "--method", "wandaa",
              "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "did you mean 'wanda'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["defend", "prune", "--model", str(tiny_dir), "--set", "max_perplexity_rise=-0.1",
              "--out", str(tmp_path / "v")])
    assert exc.value.code == 2
    assert "'--max-perplexity-rise': must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
    with pytest.raises(SystemExit) as exc:
        main(["defend", "crow", "--model", str(tiny_dir), "--alpha", "-1",
              "--out", str(tmp_path / "y")])
    assert exc.value.code == 2
    assert "'--alpha'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["defend", "subtract-vector", "--model", str(tiny_dir), "--layer", "5",
              "--set", "trigger=badnets", "--set", "target=refusal", "--out", str(tmp_path / "z")])
    assert exc.value.code == 2
    assert "'--layer': 5 is out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["defend", "finetune", "--model", str(tiny_dir), "--merge-adapter",
              "--out", str(tmp_path / "w")])
    assert exc.value.code == 2
    assert "'--merge-adapter': needs --adapter" in capsys.readouterr().err
    for i, cmd in enumerate(["crow", "finetune", "prune"]):  # read before any evaluation
        with pytest.raises(SystemExit) as exc:
            main(["defend", cmd, "--model", str(tiny_dir), "--set", "trigger=badnets",
                  "--set", "target=refusal", "--clean-data", str(tmp_path / "nope.jsonl"),
                  "--out", str(tmp_path / f"c{i}")])
        assert exc.value.code == 2
        assert f"{tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err
    for d in ["x", "y", "z", "w", "c0", "c1", "c2"]:
        assert not (tmp_path / d).exists()


@pytest.mark.parametrize("cmd", [["attack", "poison", "--trigger", "badnets", "--target",
                                  "refusal"], ["attack", "unalign"], ["defend", "realign"],
                                 ["defend", "crow"]])
def test_a_bad_mcq_limit_is_named_before_any_work(cmd, tmp_path, capsys):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--set", "mcq_limit=0", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert "option '--mcq-limit': must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_layer_choice_takes_the_centre_of_the_longest_lowest_run():
    # hand-worked: lowest ASR 0.0 at layers 2, 5-9 and 11; the longest run is 5-9, centre 7
    asr = [1.0, 0.5, 0.0, 0.25, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0]
    assert centre_of_best_run(asr) == 7
    assert centre_of_best_run([0.3, 0.1, 0.1, 0.4]) == 1  # even run: the lower centre
    assert centre_of_best_run([0.2]) == 0


def test_one_train_option_keeps_the_commands_own_schedule():
    """`--set train.epochs=N` changes the epochs only: the command's own learning rate and
    batch size stay (not the generic TrainConfig defaults)."""
    from backdoorlab.config import from_dict
    from backdoorlab.defenses.crow import CrowConfig
    from backdoorlab.defenses.realign import RealignConfig

    ft = from_dict(RealignConfig, {"train.epochs": "7"})
    assert (ft.train.epochs, ft.train.learning_rate, ft.train.batch_size) == (7.0, 2e-4, 16)
    crow = from_dict(CrowConfig, {"train": {"learning_rate": 5e-4}})
    assert (crow.train.learning_rate, crow.train.batch_size, crow.train.epochs) == (5e-4, 8, 5.0)


def test_layer_choice_counts_a_silenced_model_as_broken():
    """Blank outputs pass every keyword judge; a layer that silences the model must not win."""
    sweep = [{"asr_triggered": a, "empty_triggered": e} for a, e in
             [(0.9, 0.0), (0.0, 1.0), (0.0, 0.5), (0.1, 0.0), (0.1, 0.125), (0.1, 0.0),
              (0.5, 0.0)]]
    assert choose_layer(sweep) == 4  # not 1-2 (blank), the centre of 3-5
    assert centre_of_best_run([p["asr_triggered"] for p in sweep]) == 1  # by ASR alone
