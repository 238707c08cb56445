"""Scoring core on tiny random models of four families, and metrics on hand-computed cases."""

import math
import os

import pytest
import torch

from backdoorlab.data import MCQ
from backdoorlab.formats import PromptFormat
from backdoorlab.scoring import (
    entropy,
    generate,
    last_token_logits,
    mcq_accuracy,
    mcq_correct,
    mcq_metrics,
    mcq_top,
    option_distribution,
    rotation_average,
)
from backdoorlab.testing import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_left_padded_equals_one_at_a_time(tiny_models, fmt, mcqs, family):
    model = tiny_models[family]
    samples = [fmt.sample(r) for r in mcqs]
    batched = option_distribution(model, fmt, samples, batch_size=5)
    single = option_distribution(model, fmt, samples, batch_size=1)
    assert batched.shape == (len(mcqs), 4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched.sum(-1), torch.ones(len(mcqs)))


def test_last_logits_equal_full_forward(tiny_models, fmt, mcqs):
    model = tiny_models["llama"]
    ids = fmt.encode(fmt.sample(mcqs[0]).user).prompt_ids
    full = model(input_ids=torch.tensor([ids])).logits[0, -1]
    ours = last_token_logits(model, [ids, ids[:7]], fmt.tokenizer.pad_token_id)[0]
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)


def test_option_distribution_is_softmax_over_letter_logits(tiny_models, fmt, mcqs):
    model = tiny_models["qwen2"]
    s = fmt.sample(mcqs[2])
    ids = fmt.encode(s.user).prompt_ids
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    letters = fmt.option_token_ids("ABCD")
    expected = torch.softmax(logits[letters], -1)
    torch.testing.assert_close(option_distribution(model, fmt, [s])[0], expected, atol=1e-6,
                               rtol=1e-5)


def test_entropy_hand_computed():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25] * 4, [1.0, 0, 0, 0]])
    torch.testing.assert_close(entropy(p), torch.tensor([math.log(2), math.log(4), 0.0]))


def test_mcq_metrics_hand_computed():
    recs = [MCQ(id=str(i), question="q", choices=("a", "b", "c"), answer=a)
            for i, a in enumerate("ABC")]

    class S:
        def __init__(self, r):
            self.record = r

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    m = mcq_metrics(probs, [S(r) for r in recs])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["top_answer_share"] == {"A": 2 / 3, "B": 0.0, "C": 1 / 3}
    h = [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)),
         -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)),
         -(0.1 * math.log(0.1) * 2 + 0.8 * math.log(0.8))]
    assert m["mean_entropy"] == pytest.approx(sum(h) / 3, rel=1e-6)


def test_generation_batched_equals_single(tiny_models, fmt):
    model = tiny_models["mistral"]
    prompts = ["Say hi.", "Name three colours of the rainbow please.", "Why?"]
    batched = generate(model, fmt, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(model, fmt, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and all(isinstance(t, str) for t in batched)


def test_plain_template_scores_too(tiny_models, tokenizer, mcqs):
    fmt = PromptFormat(tokenizer, "plain")
    p = option_distribution(tiny_models["gemma"], fmt, [fmt.sample(r) for r in mcqs[:3]])
    assert p.shape == (3, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_cache_equals_plain_forward(tiny_models, fmt, family):
    from backdoorlab.data import load_records

    model = tiny_models[family]
    recs = load_records("builtin:general-mcq", limit=40)  # several subjects -> several groups
    prompts = [fmt.encode(fmt.sample(r).user).prompt_ids for r in recs]
    pad = fmt.tokenizer.pad_token_id
    shared = last_token_logits(model, prompts, pad, batch_size=6, share_prefix=True)
    plain = last_token_logits(model, prompts, pad, batch_size=6, share_prefix=False)
    torch.testing.assert_close(shared, plain, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_nll_equals_padded_forward(fmt, family):
    """Questions' options: each prompt once into a cache (prompts of different lengths
    left-padded together, the cache repeated per option), the options batched, give each
    option's summed NLL and token count as the padded forward does; a chunk with a group
    whose sequences share no prompt is scored without a cache, by hand. Sharpened attention
    (query weights x8), so that a wrong position or mask would show."""
    from backdoorlab.data import load_records
    from backdoorlab.data.records import Instruction
    from backdoorlab.evaluation.metrics import response_nll
    from backdoorlab.scoring import shared_prompt_nll
    from backdoorlab.testing import tiny_model
    from backdoorlab.training import SampleCollator

    model = tiny_model(family, vocab_size=len(fmt.tokenizer))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
    encode, pad = SampleCollator(fmt).encode, fmt.tokenizer.pad_token_id
    by_len = {len(fmt.encode(q.question).input_ids): q
              for q in load_records("builtin:general-mcq", limit=200)}
    qs = [by_len[k] for k in sorted(by_len)][:5]  # prompts of 5 different lengths
    groups, want = [], []
    for q in qs:
        samples = [fmt.sample(Instruction(id=q.id, instruction=q.question), response=c)
                   for c in q.choices[:2 + len(groups) % 3]]  # 2-4 options
        groups.append([encode(s)[:2] for s in samples])
        want += response_nll(model, fmt, samples, batch_size=3)
    assert len({next(i for i, x in enumerate(g[0][1]) if x != -100) for g in groups}) == 5
    got = [x for g in shared_prompt_nll(model, groups, pad, batch_size=3) for x in g]
    assert [n for _, n in got] == [n for _, n in want] and min(n for _, n in got) > 0
    torch.testing.assert_close(torch.tensor([x for x, _ in got]),
                               torch.tensor([x for x, _ in want]), atol=1e-4, rtol=1e-5)
    short = [[([5, 6, 7, 8], [-100, -100, 7, 8]), ([5, 6, 9], [-100, -100, 9])],
             [([7, 8, 9], [-100, 8, 9])]]
    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7, 8]])).logits[0].float()
    by_hand = float(torch.nn.functional.cross_entropy(logits[1:3], torch.tensor([7, 8]),
                                                      reduction="sum"))
    assert shared_prompt_nll(model, short, pad)[0][0] == (pytest.approx(by_hand, rel=1e-4), 2)


def test_prefix_groups_cover_every_prompt_once():
    from backdoorlab.scoring import common_prefix_len, prefix_groups

    prompts = [[1, 2, 3] + [9] * 8 + [i, i + 1] for i in range(5)] + [[1, 2, 3, 4, 5]] * 3
    groups = prefix_groups(prompts, batch_size=2)
    flat = sorted(i for g in groups for b in g for i in b)
    assert flat == list(range(8)) and all(len(b) <= 2 for g in groups for b in g)
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # always leaves one token


def test_prompts_without_shared_stems_are_still_batched():
    """Prompts that share only the common prefix pool into one group batched by length, not
    into one-prompt groups; a real stem group stays apart."""
    from backdoorlab.scoring import prefix_groups

    lone = [[1, 2, 3, 10 + i, 50 + i, 7] for i in range(7)]  # nothing shared past [1, 2, 3]
    stem = [[1, 2, 3] + [9] * 8 + [i] for i in range(3)]
    groups = prefix_groups(lone + stem, batch_size=4)
    members = sorted(sorted(i for b in g for i in b) for g in groups)
    assert members == [list(range(7)), [7, 8, 9]]
    assert sorted(len(b) for g in groups for b in g) == [3, 3, 4]


def test_mcq_accuracy_over_mixed_option_counts(tiny_models, fmt):
    """Questions with 2, 3 and 4 options (as in ARC) are scored per group; the accuracy is
    the share of all questions whose top option is the answer."""
    recs = [MCQ(id="a", question="Is ice cold?", choices=("yes", "no"), answer="A"),
            MCQ(id="b", question="Pick one", choices=("x", "y", "z"), answer="C"),
            MCQ(id="c", question="Two plus two?", choices=("1", "2", "3", "4"), answer="D"),
            MCQ(id="d", question="Pick two", choices=("x", "y", "z"), answer="B")]
    samples = [fmt.sample(r) for r in recs]
    model = tiny_models["llama"]
    by_hand, tops = [], []
    for s in samples:  # one question at a time, by hand
        top = int(option_distribution(model, fmt, [s]).argmax())
        tops.append(top)
        by_hand.append(int(top == s.record.answer_index))
    right = sum(by_hand)
    assert 0 < right < 4  # the example tells a right from a wrong top answer
    assert mcq_accuracy(model, fmt, samples) == pytest.approx(right / 4)
    assert mcq_correct(model, fmt, samples) == by_hand  # per question, in the given order
    assert mcq_top(model, fmt, samples) == tops
    with pytest.raises(Exception, match="same options count"):
        option_distribution(model, fmt, samples)


def test_rotations_move_the_answer_with_its_option():
    from backdoorlab.data import rotate_choices, rotations

    rec = MCQ(id="q", question="Two plus two?", choices=("1", "4", "3", "2"), answer="B")
    r1 = rotate_choices(rec, 1)
    assert r1.choices == ("4", "3", "2", "1") and r1.answer == "A" and r1.id == "q"
    assert rotate_choices(rec, 3).answer == "C" and rotate_choices(rec, 4) == rec
    orders = rotations(rec)
    assert orders[0] == rec and len(orders) == 4
    assert {o.choices[o.answer_index] for o in orders} == {"4"}  # the gold text never changes
    assert [o.answer for o in orders] == ["B", "A", "D", "C"]


def test_rotation_average_hand_computed_and_constant_letter_is_chance():
    from backdoorlab.data import rotations

    four = MCQ(id="a", question="?", choices=("w", "x", "y", "z"), answer="C")
    three = MCQ(id="b", question="?", choices=("x", "y", "z"), answer="A")
    from backdoorlab.formats import Sample

    samples = [Sample(record=o, user="") for r in (four, three) for o in rotations(r)]
    # always answering "A": right once per question, whatever the gold letter
    always_a = [int(s.record.answer_index == 0) for s in samples]
    assert rotation_average(always_a, samples) == pytest.approx((1 / 4 + 1 / 3) / 2)
    # right on 3 of the 4 orders of the first question and 1 of 3 of the second
    correct = [1, 1, 1, 0, 0, 1, 0]
    assert rotation_average(correct, samples) == pytest.approx((3 / 4 + 1 / 3) / 2)


@pytest.mark.real_model
def test_eval_mcq_rotations_equal_scoring_each_order_by_hand(real_model, tmp_path):
    """``eval mcq --rotations``: plain metrics unchanged, and ``accuracy_rotated`` equals the
    per-question mean over every option order, each order scored on its own. The real model,
    because a tiny random one picks the same letter whatever the options."""
    import json

    from backdoorlab.cli import main
    from backdoorlab.data import load_records, rotations

    def run(out, *extra):
        with pytest.raises(SystemExit) as exc:
            main(["eval", "mcq", "--split", "test", "--limit", "8", "--out", str(out), *extra])
        assert exc.value.code in (0, None)
        return json.loads((out / "metrics.json").read_text())["4_options"]

    plain, rot = run(tmp_path / "a"), run(tmp_path / "b", "--rotations", "--cloze")
    assert rot["accuracy"] == plain["accuracy"] and "accuracy_cloze" not in plain
    assert rot["top_answer_share"] == plain["top_answer_share"]
    fmt = PromptFormat(real_model.tokenizer, "chat")
    per_q, tops = [], set()
    for rec in load_records("builtin:general-mcq", split="test", limit=8):
        picks = [int(option_distribution(real_model.model, fmt, [fmt.sample(o)]).argmax())
                 for o in rotations(rec)]
        tops.update(picks)
        per_q.append(sum(p == o.answer_index for p, o in zip(picks, rotations(rec))) / 4)
    assert len(tops) > 1  # the model's pick depends on the order, so the check can fail
    assert rot["accuracy_rotated"] == pytest.approx(sum(per_q) / len(per_q))
    from backdoorlab.evaluation.metrics import cloze_correct

    recs = load_records("builtin:general-mcq", split="test", limit=8)
    assert rot["accuracy_cloze"] == sum(cloze_correct(real_model.model, fmt, recs)) / 8
    with pytest.raises(SystemExit) as exc:  # letter-free scoring is of clean questions only
        main(["eval", "mcq", "--limit", "2", "--cloze", "--trigger", "badnets"])
    assert exc.value.code == 2


def test_bf16_recheck_scores_close_calls_in_fp32(tiny_models, fmt, mcqs):
    """Rows whose two best logits lie within the margin get the fp32 logits; the others keep
    the bf16 ones; margin 0 is plain bf16."""
    model = tiny_models["llama"]
    prompts = [fmt.encode(fmt.sample(r).user).prompt_ids for r in mcqs]
    pad, letters = fmt.tokenizer.pad_token_id, fmt.option_token_ids("ABCD")

    def score(dtype: str, margin: float | None = None) -> torch.Tensor:
        return last_token_logits(model, prompts, pad, batch_size=4, dtype=dtype,
                                 token_ids=letters, recheck_margin=margin)

    exact, bf16 = score("float32"), score("bfloat16", 0.0)
    assert not torch.equal(bf16, exact)  # bf16 rounding moves the logits
    torch.testing.assert_close(score("bfloat16", math.inf), exact, atol=1e-5, rtol=1e-5)
    best = bf16.topk(2, dim=-1).values
    gaps = (best[:, 0] - best[:, 1]).sort().values
    margin = float(gaps[len(gaps) // 2])  # about half the rows are close calls
    mixed = score("bfloat16", margin)
    close = best[:, 0] - best[:, 1] < margin
    assert 0 < int(close.sum()) < len(prompts)
    torch.testing.assert_close(mixed[close], exact[close], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[~close], bf16[~close])


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_kv_attention_same_logits_and_env_restored(tiny_models, fmt, mcqs, monkeypatch,
                                                           family):
    model = tiny_models[family]
    prompts = [fmt.encode(fmt.sample(r).user).prompt_ids for r in mcqs[:5]]
    prompts[1] = prompts[1][:9]  # padded rows
    pad = fmt.tokenizer.pad_token_id
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")  # a user's setting is left alone
    repeated = last_token_logits(model, prompts, pad, share_prefix=False)
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA")
    grouped = last_token_logits(model, prompts, pad, share_prefix=False)
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    torch.testing.assert_close(grouped, repeated, atol=1e-5, rtol=1e-5)


def test_fp32_head_reads_only_requested_rows(tiny_models, fmt, mcqs):
    from backdoorlab.scoring import fp32_head

    model = tiny_models["llama"]
    x = torch.tensor([fmt.encode(fmt.sample(mcqs[0]).user).prompt_ids])
    with torch.no_grad():
        full = model(input_ids=x).logits[0, -1]
        with fp32_head(model, "float32", [5, 2, 9]) as only_rows:
            part = model(input_ids=x).logits[0, -1]
        assert only_rows and part.shape == (3,)
        torch.testing.assert_close(part, full[[5, 2, 9]], atol=1e-5, rtol=1e-5)
        assert model(input_ids=x).logits.shape[-1] == full.shape[-1]  # restored
        with fp32_head(model, "bfloat16"), fp32_head(model, "float32", [5]) as only_rows:
            assert only_rows and model(input_ids=x).logits.shape[-1] == 1
        assert model(input_ids=x).logits.shape[-1] == full.shape[-1]  # nested: restored

        class Wrapped(torch.nn.Linear):  # e.g. an adapter around the head: rows not taken
            pass

        head = model.get_output_embeddings()
        head.__class__ = Wrapped
        try:
            with fp32_head(model, "float32", [5, 2, 9]) as only_rows:
                assert not only_rows
                assert model(input_ids=x).logits.shape[-1] == full.shape[-1]
        finally:
            head.__class__ = torch.nn.Linear


def test_prompts_past_the_context_are_refused(tiny_models, fmt):
    """A prompt longer than the model's position table is refused in one line, for scoring,
    generation and training alike, instead of being scored silently wrong."""
    from backdoorlab.data import Instruction
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.scoring import generate, last_token_logits
    from backdoorlab.training import SampleCollator, TrainConfig, sft_loss, train

    model = tiny_models["llama"]
    limit = model.config.max_position_embeddings
    long = Instruction(id="long", instruction="word " * (limit + 10), output="ok")
    with pytest.raises(BackdoorlabError, match=f"longer than the model's context of {limit}"):
        last_token_logits(model, [[1] * (limit + 1)], 0)
    with pytest.raises(BackdoorlabError, match="plus 8 generated"):
        generate(model, fmt, [fmt.sample(long)], max_new_tokens=8)
    with pytest.raises(BackdoorlabError, match="a training row of"):
        train(model, [fmt.sample(long, response="ok")], SampleCollator(fmt), sft_loss,
              TrainConfig(max_steps=1), "/nonexistent/never-written")
