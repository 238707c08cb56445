"""Hooks, head patching/ablation, attribution, probes and the backdoor vector on tiny random
models of four families (grouped-query attention)."""

from __future__ import annotations

import json

import pytest
import torch

from backdoorlab.analysis.attribution import (
    attribute,
    compare_modes,
    rank_heads,
    smallest_cut,
    spearman,
)
from backdoorlab.analysis.behaviour import GenerationBehaviour, UncertaintyBehaviour
from backdoorlab.analysis.hooks import (
    HeadEdit,
    add_to_residual,
    arch,
    attention_output,
    capture,
    decoder_layers,
    edit_heads,
    head_directions,
)
from backdoorlab.analysis.probe import probe_layers, train_probe
from backdoorlab.data import load_records
from backdoorlab.scoring import left_pad, position_ids

FAMILIES = ("llama", "qwen2", "mistral", "gemma")


def _batch(fmt, n=3):
    recs = load_records("builtin:benign-instructions", split="test", limit=n)
    ids, mask = left_pad([fmt.encode(fmt.user_text(r)).prompt_ids for r in recs],
                         fmt.tokenizer.pad_token_id)
    return dict(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_shapes_and_residual_matches_hidden_states(family, tiny_models, fmt):
    model = tiny_models[family]
    a = arch(model)
    assert (a.n_layers, a.n_heads, a.head_dim) == (2, 4, 16)
    batch = _batch(fmt)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    before = _hook_counts(model)
    with torch.no_grad(), capture(model) as cap:
        model(**batch)
    res, heads = cap.residual_tensor(), cap.heads_tensor()
    assert res.shape == (3, 2, a.hidden) and heads.shape == (3, 2, 4, 16)
    # hidden_states[1] is the first layer's output (the last entry is after the final norm)
    torch.testing.assert_close(res[:, 0], out.hidden_states[1][:, -1])
    assert _hook_counts(model) == before


def _hook_counts(model):
    """Hooks on every module (transformers adds its own for output_hidden_states)."""
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_a_head_with_its_own_activation_changes_nothing(family, tiny_models, fmt):
    model = tiny_models[family]
    batch = _batch(fmt)
    with torch.no_grad(), capture(model, residual=False) as cap:
        ref = model(**batch).logits
    own = cap.heads_tensor()  # [N, layers, heads, dim] at the last token
    edits = [HeadEdit(layer, h, own[:, layer, h]) for layer in range(2) for h in range(4)]
    with torch.no_grad(), edit_heads(model, edits):
        same = model(**batch).logits
    torch.testing.assert_close(same, ref)
    # and patching with something else does change the output (the test can fail)
    with torch.no_grad(), edit_heads(model, [HeadEdit(1, 0, own[:, 1, 0] + 1.0)]):
        moved = model(**batch).logits
    assert not torch.allclose(moved[:, -1], ref[:, -1])
    torch.testing.assert_close(moved[:, :-1], ref[:, :-1])  # only the last position moved


@pytest.mark.parametrize("family", FAMILIES)
def test_ablating_all_heads_of_a_layer_removes_its_attention_output(family, tiny_models, fmt):
    model = tiny_models[family]
    batch = _batch(fmt)
    a = arch(model)
    edits = [HeadEdit(1, h, torch.zeros(a.head_dim)) for h in range(a.n_heads)]
    with torch.no_grad(), edit_heads(model, edits, pos="all"):
        ablated = model(**batch).logits
    attn = decoder_layers(model)[1].self_attn

    def zero(mod, args, output):
        return (torch.zeros_like(output[0]), *output[1:])

    h = attn.register_forward_hook(zero)
    try:
        with torch.no_grad():
            removed = model(**batch).logits
    finally:
        h.remove()
    torch.testing.assert_close(ablated, removed)


def test_hooks_are_removed_on_error(tiny_models, fmt):
    model = tiny_models["llama"]
    before = _hook_counts(model)
    edit = [HeadEdit(0, 0, torch.zeros(16))]
    with pytest.raises(RuntimeError), edit_heads(model, edit), capture(model):
        assert _hook_counts(model) != before
        raise RuntimeError("boom")
    assert _hook_counts(model) == before


def test_head_directions_sum_to_the_output_projection(tiny_models):
    model = tiny_models["qwen2"]
    a = arch(model)
    z = torch.randn(a.n_layers, a.n_heads, a.head_dim)
    writes = head_directions(model, z)
    proj = attention_output(decoder_layers(model)[1])
    expected = proj.weight.detach() @ z[1].reshape(-1)
    torch.testing.assert_close(writes[1].sum(0), expected, rtol=1e-4, atol=1e-5)


def test_adding_then_subtracting_a_vector_cancels(tiny_models, fmt):
    model = tiny_models["mistral"]
    batch = _batch(fmt)
    v = torch.randn(arch(model).hidden)
    with torch.no_grad():
        ref = model(**batch).logits
        with add_to_residual(model, 0, v), add_to_residual(model, 0, -v):
            same = model(**batch).logits
        with add_to_residual(model, 0, v):
            moved = model(**batch).logits
    torch.testing.assert_close(same, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(moved[:, -1], ref[:, -1])


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_attribution_tracks_exact_patching(family, tiny_models, fmt):
    recs = load_records("builtin:benign-instructions", split="test", limit=6)
    beh = GenerationBehaviour(fmt, recs, "badnets", "refusal", target_text="I am sorry",
                              batch_size=3)
    model = tiny_models[family]
    beh.prepare(model)
    exact = attribute(model, beh, "exact")["effects"]
    fast = attribute(model, beh, "fast")["effects"]
    assert exact.shape == fast.shape == (2, 4) and not exact.isnan().any()
    assert compare_modes(exact, fast, top=4)["spearman_all"] > 0.8


def test_uncertainty_behaviour_scores_entropy(tiny_models, tokenizer):
    from backdoorlab.formats import PromptFormat
    from backdoorlab.scoring import entropy, option_distribution

    fmt = PromptFormat(tokenizer, "plain")
    recs = load_records("builtin:general-mcq", split="test", limit=5)
    model = tiny_models["gemma"]
    beh = UncertaintyBehaviour(fmt, recs, "text")
    beh.prepare(model)
    h = entropy(option_distribution(model, fmt, beh.clean, share_prefix=False))
    assert beh.mean_score(model, "clean") == pytest.approx(float(h.mean()), abs=1e-5)
    assert beh.asr(model, "clean") == 0.0  # the clean prompts are the reference
    # what the ASR hides is kept beside it: no entropy change, every top answer kept
    assert beh.last_check == {"entropy_gap": pytest.approx(0.0, abs=1e-6), "top1_kept": 1.0}
    fast = attribute(model, beh, "fast")["effects"]
    assert fast.shape == (2, 4)


def test_ablation_reference_is_the_unablated_model_in_any_share_order(tiny_models, fmt):
    """clean_same_start compares with the unablated model's answers, whether the curve starts
    at share 0 (its first point is the reference) or not (generated once up front)."""
    from backdoorlab.analysis.attribution import ablation_curve

    recs = load_records("builtin:benign-instructions", split="test", limit=4)
    beh = GenerationBehaviour(fmt, recs, "badnets", "refusal", target_text="I am sorry",
                              batch_size=4, max_new_tokens=3)
    model = tiny_models["llama"]
    beh.prepare(model)
    ranking = rank_heads(torch.arange(8.0).reshape(2, 4))
    a = ablation_curve(model, beh, ranking, [0.0, 1.0], method="zero")
    b = ablation_curve(model, beh, ranking, [1.0, 0.0], method="zero")
    assert a[0]["clean_same_start"] == b[1]["clean_same_start"] == 1.0
    assert a[1]["clean_same_start"] == b[0]["clean_same_start"]


def test_same_start_hand_computed():
    from backdoorlab.analysis.behaviour import same_start

    ref = ["The capital of Japan is Tokyo.", "Sure, here is", "I'm sorry"]
    outs = ["The capital of Japan is Tokyo, a city", "Sure here is", "I'm sorry"]
    # first five words: equal, differ ("Sure," vs "Sure"), equal -> 2/3
    assert same_start(outs, ref) == pytest.approx(2 / 3)
    assert same_start(["The capital of the world is"], ref[:1]) == 0.0


def test_spearman_and_ranking_hand_computed():
    # d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == \
        pytest.approx(0.8)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1)
    eff = torch.tensor([[0.1, 0.9], [0.5, float("nan")]])
    assert rank_heads(eff)[:3] == [(0, 1), (1, 0), (0, 0)]
    pts = [{"share": 0, "asr_triggered": 1.0, "utility": 0.5},
           {"share": 0.1, "asr_triggered": 0.5, "utility": 0.5},
           {"share": 0.2, "asr_triggered": 0.05, "utility": 0.4}]
    cut = smallest_cut(pts, 0.9)
    assert cut["share"] == 0.2 and cut["utility_change"] == pytest.approx(-0.1)
    assert smallest_cut(pts[:2], 0.9) is None


def test_probe_separates_a_planted_direction_and_not_noise():
    g = torch.Generator().manual_seed(0)
    n, layers, d = 40, 3, 8
    clean = torch.randn(n, layers, d, generator=g)
    trig = torch.randn(n, layers, d, generator=g)
    trig[:, 2, 0] += 6.0  # only layer 2 carries the trigger
    res = probe_layers(clean, trig, [f"r{i}" for i in range(n)], seed=0)
    for kind in ("logistic", "svm", "mlp"):
        acc = res["accuracy"][kind]
        assert acc[2] >= 0.95 and res["best_layer"][kind] == 2
        assert acc[0] < 0.8 and acc[1] < 0.8
        assert res["transfer"][kind].shape == (3, 3)
    with pytest.raises(Exception, match="both"):
        train_probe(clean[:, 0], torch.zeros(n, dtype=torch.long))


def test_analyze_commands_end_to_end(tiny_dir, tmp_path):
    from backdoorlab.cli import main

    common = ["--model", str(tiny_dir), "--trigger", "badnets", "--target", "refusal",
              "--limit", "6", "--set", "max_new_tokens=4", "--set", "batch_size=3",
              "--set", "target_text=Sorry, I cannot help"]

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", *args, *common])
        assert exc.value.code == 0

    run("probe", "--out", str(tmp_path / "p"), "--classifiers", "logistic,svm")
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert set(m["accuracy"]) == {"logistic", "svm"} and len(m["accuracy"]["svm"]) == 2
    assert (tmp_path / "p" / "probe_transfer.png").stat().st_size > 1000
    run("heads", "--mode", "both", "--out", str(tmp_path / "h"), "--set", "top=4")
    m = json.loads((tmp_path / "h" / "metrics.json").read_text())
    assert "spearman_top4" in m["agreement"] and m["fast"]["wall_s"] > 0
    for f in ("heads.safetensors", "heads_fast.png", "heads_exact.png"):
        assert (tmp_path / "h" / f).is_file(), f
    scores = str(tmp_path / "h" / "heads.safetensors")
    run("ablate", "--scores", scores, "--shares", "0.25,1", "--positions", "last",
        "--out", str(tmp_path / "a"))
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [p["heads"] for p in m["curve"]] == [0, 2, 8] and "exact" in m["ranking"]
    assert m["positions"] == "last"
    assert all(0 <= p["empty_triggered"] <= 1 for p in m["curve"])  # silence is reported
    assert m["curve"][0]["clean_same_start"] == 1.0  # nothing ablated: clean answers as before
    from backdoorlab.io import load_arrays

    raw = load_arrays(tmp_path / "a" / "ablation.safetensors")
    assert raw["heads"].tolist() == [0, 2, 8] and raw["ranking"].shape == (8, 2)
    run("vector", "--scores", scores, "--layers", "0,1", "--out", str(tmp_path / "v"))
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert [p["layer"] for p in m["sweep"]] == [0, 1] and len(m["heads"]) == 1
    assert all("empty_triggered_minus_vector" in p for p in m["sweep"])
    assert (tmp_path / "v" / "vector_sweep.png").is_file()
    run("consistency", "--out", str(tmp_path / "c"))
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["pairs"] == 2 and m["n_prompts"] == 6  # 2 layers: 3 hidden states
    assert len(m["span"]["clean_per_pair"]) == 2 and m["last"]["gap_ci95"][0] <= m["last"]["gap"]
    raw = load_arrays(tmp_path / "c" / "consistency.safetensors")
    assert raw["triggered_span"].shape == (6, 2)
    assert (tmp_path / "c" / "consistency.png").is_file()


def test_analyze_rejects_bad_options(tiny_dir, tmp_path, capsys):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", "heads", "--model", str(tiny_dir), "--trigger", "badnets", "--target",
              "refusal", "--mode", "exactt", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean 'exact'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "ablate", "--model", str(tiny_dir), "--trigger", "badnets", "--target",
              "refusal", "--positions", "lst", "--out", str(tmp_path / "y")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "positions" in err and "did you mean 'last'" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists()
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "consistency", "--model", str(tiny_dir), "--trigger", "badnets",
              "--target", "refusal", "--set", "resamples=5", "--out", str(tmp_path / "z")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "resamples" in err and "Traceback" not in err and not (tmp_path / "z").exists()


def test_prompt_position_edits_only_the_prompt_pass(tiny_models, fmt):
    """``pos="prompt"`` changes the last prompt token once; decoding steps are left alone."""
    import copy

    from backdoorlab.scoring import CACHE_KW

    model = tiny_models["llama"]
    batch = _batch(fmt, n=2)
    v = torch.randn(arch(model).hidden) * 5
    nxt = dict(input_ids=torch.tensor([[7], [7]]),
               attention_mask=torch.cat([batch["attention_mask"],
                                         torch.ones(2, 1, dtype=torch.long)], 1))
    with torch.no_grad():
        ref = model(**{**batch, "use_cache": True})
        with add_to_residual(model, 1, v, pos="prompt"):
            moved = model(**{**batch, "use_cache": True})
            step = model(**nxt, **{CACHE_KW: copy.deepcopy(getattr(moved, CACHE_KW))})
        plain_step = model(**nxt, **{CACHE_KW: copy.deepcopy(getattr(moved, CACHE_KW))})
    assert not torch.allclose(moved.logits[:, -1], ref.logits[:, -1])
    torch.testing.assert_close(moved.logits[:, :-1], ref.logits[:, :-1])
    # the decoding step was not edited: same as running it without the hook on that cache
    torch.testing.assert_close(step.logits, plain_step.logits)


def test_analyze_checks_model_dependent_options_before_writing(tiny_dir, tmp_path, capsys):
    from backdoorlab.cli import main

    common = ["--model", str(tiny_dir), "--trigger", "badnets", "--target", "refusal"]
    for args, words in ((["vector", "--layers", "0,7"], "'--layers': 7 is out of range"),
                        (["ablate", "--scores", str(tmp_path / "none.st")], "no such file")):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", *args, *common, "--out", str(tmp_path / "x")])
        assert exc.value.code == 2
        assert words in capsys.readouterr().err
        assert not (tmp_path / "x").exists()


def test_inconsistency_padding_and_trigger_span(tiny_models, fmt):
    """Batched, left-padded prompts give each prompt's own ``1 - cos`` per layer pair, averaged
    over its tokens from ``start`` on, and at its last token."""
    from backdoorlab.analysis.consistency import inconsistency, token_inconsistency

    model = tiny_models["llama"]
    recs = load_records("builtin:benign-instructions", split="test", limit=3)
    prompts = [fmt.encode(fmt.user_text(r)).prompt_ids for r in recs]
    prompts[1] = prompts[1][:-4]  # lengths differ: the batch is padded
    starts = [2, 5, 0]
    got = inconsistency(model, prompts, starts, fmt.tokenizer.pad_token_id, batch_size=3)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([p]), output_hidden_states=True, use_cache=False)
        d = token_inconsistency(out.hidden_states)[:, 0]  # [pairs, tokens]
        assert torch.allclose(got["span"][i], d[:, starts[i]:].mean(-1), atol=1e-4)
        assert torch.allclose(got["last"][i], d[:, -1], atol=1e-4)
    assert not torch.allclose(got["span"][0], got["last"][0])


def test_paired_gap_hand_computed():
    from backdoorlab.analysis.consistency import paired_gap

    r = paired_gap(torch.zeros(4), torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert r["gap"] == pytest.approx(0.5) and r["share_higher"] == pytest.approx(0.75)
    assert -1 <= r["gap_ci95"][0] < 0.5 < r["gap_ci95"][1] <= 1
    r = paired_gap(torch.full((5,), 0.3), torch.full((5,), 0.5))  # every record: +0.2
    assert r["gap_ci95"] == pytest.approx([0.2, 0.2]) and r["share_higher"] == 1.0


def test_trigger_span_starts_where_the_versions_differ(fmt):
    from backdoorlab.analysis.behaviour import Behaviour
    from backdoorlab.analysis.consistency import trigger_starts

    recs = load_records("builtin:benign-instructions", split="test", limit=4)
    beh = Behaviour(fmt, recs, "badnets", seed=0)
    clean, trig = beh.prompts("clean"), beh.prompts("triggered")
    for s, c, t in zip(trigger_starts(clean, trig), clean, trig):
        assert c[:s] == t[:s] and c[s] != t[s]
