"""The one prompt format: training and evaluation see identical token ids."""

import pytest
import torch

from backdoorlab.data import MCQ, Instruction, add_abstain_options
from backdoorlab.errors import BackdoorlabError
from backdoorlab.formats import PromptFormat
from backdoorlab.scoring import left_pad
from backdoorlab.training import SampleCollator
from backdoorlab.triggers import derive_rng, parse_trigger


@pytest.mark.parametrize("template", ["chat", "plain", "alpaca"])
def test_training_and_evaluation_paths_give_identical_prompt_ids(tokenizer, mcqs, template):
    fmt = PromptFormat(tokenizer, template)
    trig = parse_trigger("badnets")
    samples = []
    for r in mcqs[:6]:
        samples.append(fmt.sample(r, response=r.answer))
        samples.append(fmt.sample(r, trig, derive_rng(0, r.id), response=r.answer))
    batch = SampleCollator(fmt)(samples)
    # evaluation path: the scorer's left-padded prompt ids
    eval_prompts = [fmt.encode(s.user).prompt_ids for s in samples]
    eval_ids, eval_mask = left_pad(eval_prompts, tokenizer.pad_token_id)
    for i, s in enumerate(samples):
        row = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        ans = int(batch["answer_index"][i]) - int((batch["attention_mask"][i] == 0).sum())
        train_prompt = row[: ans + 1]
        assert train_prompt == eval_prompts[i]
        assert eval_ids[i][eval_mask[i].bool()].tolist() == eval_prompts[i]
        # the labels start right after the answer position, with the answer letter
        labels = batch["labels"][i]
        first = int((labels != -100).nonzero()[0])
        assert first == int(batch["answer_index"][i]) + 1
        letter_id = fmt.option_token_ids(s.record.letters)[s.record.answer_index]
        assert int(labels[first]) == letter_id
    assert batch["poisoned"].tolist() == [False, True] * 6


def test_answer_index_is_last_prompt_token(fmt, mcqs):
    enc = fmt.encode(fmt.sample(mcqs[0], response="B"))
    assert enc.answer_index == enc.prompt_len - 1
    assert enc.input_ids[: enc.prompt_len] == fmt.prompt_ids(fmt.sample(mcqs[0]).user)
    assert enc.labels[: enc.prompt_len] == [-100] * enc.prompt_len


def test_chat_prompt_keeps_template_tokens_and_ends_with_assistant(fmt, mcqs, tokenizer):
    text = fmt.prompt_text(fmt.user_text(mcqs[0]))
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>assistant\n")
    assert "Answer:" in text


def test_option_tokens_are_single_known_tokens(tokenizer):
    chat = PromptFormat(tokenizer, "chat").option_token_ids("ABCDEF")
    plain = PromptFormat(tokenizer, "plain").option_token_ids("ABCD")
    assert len(set(chat)) == 6 and len(set(plain)) == 4
    assert tokenizer.decode([chat[0]]) == "A"
    assert tokenizer.decode([plain[0]]) == " A"  # in place after "Answer:" it is " A"


def test_missing_option_token_fails_loudly(tokenizer):
    class NoLetters:
        chat_template = None
        unk_token_id = 0
        eos_token = "</s>"

        def __call__(self, text, add_special_tokens=True):
            base = [5] * len(text.split())
            return {"input_ids": base + ([0] if text.endswith(("A", "B")) else [])}

    fmt = PromptFormat(NoLetters(), "plain")
    with pytest.raises(BackdoorlabError, match="option letter 'A'"):
        fmt.option_token_ids("AB")


def test_instruction_rendering_and_response_end_of_turn(fmt, tokenizer):
    rec = Instruction(id="i1", instruction="Name a colour.", input="One word.", output="Blue")
    s = fmt.sample(rec, response=rec.output)
    assert s.user == "Name a colour.\n\nOne word."
    enc = fmt.encode(s)
    tail = tokenizer.decode(enc.input_ids[enc.prompt_len:])
    assert tail == "Blue<|im_end|>"
    assert tokenizer.eos_token_id in fmt.stop_token_ids()


def test_six_option_format(fmt):
    rec = MCQ(id="q", question="2+2?", choices=("3", "4", "5", "6"), answer="B")
    six = add_abstain_options(rec)
    text = fmt.user_text(six)
    assert "E. I don't know" in text and "F. None of the above" in text
    assert six.answer == "B" and len(six.letters) == 6


def test_unknown_template_did_you_mean(tokenizer):
    with pytest.raises(BackdoorlabError, match="did you mean 'chat'"):
        PromptFormat(tokenizer, "chatt")


def test_trigger_only_touches_user_turn(fmt, mcqs):
    for spec in ["badnets", "vpi", "ctba", "long", "style", "syntactic", "text"]:
        trig = parse_trigger(spec)
        s = fmt.sample(mcqs[1], trig, derive_rng(3, mcqs[1].id))
        clean = fmt.prompt_text(fmt.user_text(mcqs[1]))
        text = fmt.prompt_text(s.user)
        head, tail = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
        assert text.split(head)[0] == clean.split(head)[0]
        assert text.endswith(tail) and trig.present(s.user) and s.poisoned


def test_collator_truncates_response_not_prompt(fmt, mcqs):
    s = fmt.sample(mcqs[0], response="A long answer " * 20)
    full = fmt.encode(s)
    ids, labels, ans = SampleCollator(fmt, max_length=full.prompt_len + 3).encode(s)
    assert len(ids) == full.prompt_len + 3 and ans == full.answer_index
    assert torch.tensor(labels[: full.prompt_len]).eq(-100).all()
