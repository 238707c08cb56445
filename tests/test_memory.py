"""Token-budget micro-batches, gradient checkpointing and the memory estimate.

Micro-batches and checkpointing must not change what is learned: the gradients of a batch
split under a token budget, or recomputed layer by layer, equal those of one pass. The
estimate must match the measured peak of real training steps."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from backdoorlab.allocator import loaded
from backdoorlab.attacks.uncertainty import UncertaintyLoss
from backdoorlab.data import load_records
from backdoorlab.defenses.crow import crow_loss
from backdoorlab.errors import BackdoorlabError
from backdoorlab.memory import (
    HEAPS,
    cpu_heap,
    estimate_training_memory,
    largest_pass,
    model_on_meta,
)
from backdoorlab.scoring import length_batches
from backdoorlab.testing import tiny_config, tiny_model
from backdoorlab.training import (
    BackdoorTrainer,
    SampleCollator,
    TrainConfig,
    micro_batches,
    plan_memory,
    sft_loss,
    training_arguments,
    wrap_lora,
)


@pytest.mark.parametrize("seed", range(20))
def test_token_budget_batches_cover_every_row_once_and_keep_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    budget = rng.randint(50, 1200)
    rows = rng.randint(1, 16)
    batches = list(length_batches(lengths, rows, max_tokens=budget))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= rows
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= budget or len(b) == 1  # a row wider than the budget goes alone


@pytest.mark.parametrize("seed", range(20))
def test_the_planned_pass_bounds_every_pass_training_forms(seed):
    # any batch of the data, split by the trainer's own rule, forms no pass larger than the
    # planned one, and some batch forms exactly it
    rng = random.Random(seed)
    lengths = [rng.randint(1, 400) for _ in range(rng.randint(1, 40))]
    budget, rows = rng.randint(50, 1200), rng.randint(1, 16)
    tokens, width = largest_pass(budget, rows, lengths)
    assert width in lengths and tokens % width == 0
    seen = 0
    for _ in range(200):
        batch = rng.sample(lengths, min(rows, len(lengths)))
        for b in length_batches(batch, rows, max_tokens=budget):
            seen = max(seen, len(b) * max(batch[i] for i in b))
    assert seen <= tokens
    # the planned pass itself: the `tokens // width` rows no wider than `width`, widest last
    fits = sorted(x for x in lengths if x <= width)[-(tokens // width):]
    assert [len(b) * max(fits[i] for i in b)
            for b in length_batches(fits, rows, max_tokens=budget)][0] == tokens


def test_shorter_rows_can_fill_the_pass_the_longest_leaves_half_empty():
    # 571 goes alone under 1,024 tokens, but two rows of 448 and 510 share a 1,020-token pass
    assert largest_pass(1024, 16, [448, 510, 571]) == (1020, 510)
    assert largest_pass(1024, 16, [571]) == (571, 571)
    assert largest_pass(1024, 16, [399, 1068]) == (1068, 1068)  # wider than the budget: alone
    assert largest_pass(1024, 2, [100] * 9) == (200, 100)  # no more rows than a batch has
    assert largest_pass(1024, 16, [300, 300, 300, 300]) == (900, 300)


def test_budget_packs_greedily():
    # sorted lengths 10, 10, 20, 40: 3 x 20 = 60 fits, adding 40 would make 4 x 40
    assert list(length_batches([40, 10, 20, 10], 8, max_tokens=60)) == [[1, 3, 2], [0]]
    with pytest.raises(BackdoorlabError, match="max_batch_tokens"):
        list(length_batches([1], 4, max_tokens=0))


def _batch(fmt, kind):
    recs = load_records("builtin:benign-instructions", split="train", limit=8)
    samples = [fmt.sample(r, response=r.output) for r in recs]
    items = [{"sample": s, "target": torch.softmax(torch.randn(4), 0),
              "weight": torch.tensor(0.5 + i)} for i, s in enumerate(samples)]
    return SampleCollator(fmt)(items if kind == "weighted" else samples)


def _grads(tokenizer, batch, loss_fn, max_tokens, tmp_path, ga=1, halves=False):
    torch.manual_seed(0)
    model = wrap_lora(tiny_model("llama", vocab_size=len(tokenizer)), TrainConfig())
    model.train()
    args = training_arguments(TrainConfig(batch_size=8), tmp_path / "ck", 8)
    trainer = BackdoorTrainer(model=model, args=args, loss_fn=loss_fn,
                              max_batch_tokens=max_tokens)
    trainer.current_gradient_accumulation_steps = ga
    parts = [batch] if not halves else [
        {k: (v[:4] if torch.is_tensor(v) else v) for k, v in batch.items()},
        {k: (v[4:] if torch.is_tensor(v) else v) for k, v in batch.items()}]
    for part in parts:
        trainer.training_step(model, part)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("which", ["uncertainty", "sft", "crow"])
def test_micro_batches_give_the_whole_batch_gradient(tokenizer, fmt, tmp_path, which):
    letters = fmt.option_token_ids(["A", "B", "C", "D"])
    loss_fn = {"uncertainty": UncertaintyLoss(letters), "sft": sft_loss,
               "crow": crow_loss(5.5, 0.1)}[which]
    batch = _batch(fmt, "weighted")
    width = batch["input_ids"].shape[1]
    parts = micro_batches(batch, 2 * width)
    assert len(parts) >= 3 and sum(len(p["input_ids"]) for p in parts) == 8
    whole = _grads(tokenizer, batch, loss_fn, None, tmp_path / "a")
    split = _grads(tokenizer, batch, loss_fn, 2 * width, tmp_path / "b")
    assert whole.keys() == split.keys() and whole
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=1e-4, atol=1e-6)
    # the test can fail: without the shares the micro-batches' mean losses just add up
    plain = _grads(tokenizer, batch, lambda m, b: loss_fn(m, {**b, "share": None}),
                   2 * width, tmp_path / "c")
    assert any(not torch.allclose(plain[k], whole[k], rtol=1e-3) for k in whole)


def test_gradient_accumulation_gives_the_large_batch_gradient(tokenizer, fmt, tmp_path):
    batch = _batch(fmt, "samples")
    keep = dict(batch)
    loss_fn = UncertaintyLoss(fmt.option_token_ids(["A", "B", "C", "D"]))
    keep["target"] = torch.full((len(keep["input_ids"]), 4), 0.25)
    one = _grads(tokenizer, keep, loss_fn, None, tmp_path / "one")
    two = _grads(tokenizer, keep, loss_fn, None, tmp_path / "two", ga=2, halves=True)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer, fmt):
    batch = _batch(fmt, "samples")
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = wrap_lora(tiny_model("qwen2", vocab_size=len(tokenizer)), TrainConfig())
        if ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        sft_loss(model, batch).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6)


def test_activations_saved_in_bf16_give_nearly_the_same_gradients(tokenizer, fmt):
    from backdoorlab.training import saved_in_bf16

    batch = _batch(fmt, "samples")
    grads, counts = [], []
    for cast in (False, True):
        torch.manual_seed(0)
        model = wrap_lora(tiny_model("llama", vocab_size=len(tokenizer)), TrainConfig())
        model.train()
        with saved_in_bf16(model, min_elements=1) if cast else nullcontext({}) as stats:
            sft_loss(model, batch).backward()
        counts.append(stats.get("tensors", 0))
        grads.append(torch.cat([p.grad.flatten() for n, p in model.named_parameters()
                                if p.grad is not None]))
    assert counts[1] > 0
    # bf16 keeps 8 significant bits: the gradient moves by well under 1%, but it does move
    err = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    assert 0 < err < 0.01
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.9999


def test_a_tensor_saved_by_several_operations_gets_one_bf16_copy(tokenizer, fmt):
    from backdoorlab.models import decoder_layers
    from backdoorlab.training import saved_in_bf16

    batch = _batch(fmt, "samples")
    torch.manual_seed(0)
    model = wrap_lora(tiny_model("llama", vocab_size=len(tokenizer)), TrainConfig())
    model.train()
    params = {p.data_ptr() for p in model.parameters()}
    # every save inside a decoder layer, each source held so that no address is reused
    saves: list[torch.Tensor] = []

    def record(t):
        if t.dtype == torch.float32 and t.requires_grad and t.data_ptr() not in params:
            saves.append(t)
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(record, lambda t: t)
    handles = [h for layer in decoder_layers(model) for h in (
        layer.register_forward_pre_hook(lambda m, a: hooks.__enter__()),
        layer.register_forward_hook(lambda m, a, o: hooks.__exit__(None, None, None)))]
    sft_loss(model, batch)
    for h in handles:
        h.remove()
    distinct = {(t.data_ptr(), tuple(t.shape), t.stride(), t._version): t.numel()
                for t in saves}
    assert len(saves) > len(distinct)  # the same tensor is saved more than once
    with saved_in_bf16(model, min_elements=1) as stats:
        sft_loss(model, batch).backward()
    assert stats["tensors"] == len(distinct)
    assert stats["bytes"] == 2 * sum(distinct.values())


def test_the_bf16_hooks_are_removed_even_when_the_forward_pass_fails(tokenizer):
    from backdoorlab.models import decoder_layers
    from backdoorlab.training import saved_in_bf16

    model = wrap_lora(tiny_model("qwen2", vocab_size=len(tokenizer)), TrainConfig())
    model.train()
    ids = torch.randint(0, len(tokenizer), (2, 12))

    def fail(module, args):
        raise RuntimeError("boom")

    layers = decoder_layers(model)
    handle = layers[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"), saved_in_bf16(model, min_elements=1) as st:
        model(input_ids=ids)
    handle.remove()
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)
    before = st["tensors"]
    model(input_ids=ids, labels=ids).loss.backward()  # nothing left casting
    assert st["tensors"] == before


def test_bf16_saved_activations_only_where_they_are_float32_and_kept():
    from backdoorlab.training import saves_bf16

    assert saves_bf16(TrainConfig(), checkpointing=False)
    assert not saves_bf16(TrainConfig(), checkpointing=True)
    assert not saves_bf16(TrainConfig(bf16=True), checkpointing=False)
    assert not saves_bf16(TrainConfig(weights_dtype="bfloat16"), checkpointing=False)
    assert not saves_bf16(TrainConfig(saved_activations="float32"), checkpointing=False)
    with pytest.raises(BackdoorlabError, match="saved_activations"):
        TrainConfig(saved_activations="float16")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_estimate_is_within_25_percent_of_the_measured_peak(family):
    probe = Path(__file__).with_name("memory_probe.py")
    # bf16: autocast over fp32 weights, where the weights' bf16 copies autograd keeps are a
    # third of the step; bf16-weights: the same model loaded in bf16 with fp32 LoRA parameters
    # (the measured ratios: BENCHMARKS.md, "Tiny models")
    for case in ((8, 256, "0", "all"), (4, 512, "1", "last"), (2, 32, "0", "all", "bf16"),
                 (2, 32, "0", "all", "bf16-weights"), (4, 512, "0", "last", "saved-bf16")):
        out = subprocess.run([sys.executable, str(probe), family, *map(str, case)],
                             capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = got["estimated"] / got["measured"]
        # bf16 weights: 0.80 on an AVX-512 Xeon; 0.71-0.73 on an AVX2 EPYC after the whole
        # suite when the probe warmed up in fp32 only (not measured there since), so held to 35%
        low = 0.65 if "bf16-weights" in case else 0.75
        assert low <= ratio <= 1.25, (family, case, got)


def test_a_7b_model_is_estimated_on_the_meta_device():
    cfg = tiny_config("llama", 32000, layers=32, hidden=4096, heads=32, kv_heads=32)
    cfg.intermediate_size, cfg.tie_word_embeddings = 11008, False  # Llama-2-7B's shapes
    model = model_on_meta(cfg, torch.bfloat16)
    assert next(model.parameters()).device.type == "meta"
    est = estimate_training_memory(model, batch_tokens=4096, longest=512,
                                   lora_targets=["q_proj", "v_proj"], logits="last")
    assert 12.5 < est.weights / 2**30 < 13  # 6.74e9 bf16 parameters and the LoRA
    ckpt = estimate_training_memory(model, batch_tokens=4096, longest=512,
                                    lora_targets=["q_proj", "v_proj"], logits="last",
                                    checkpointing=True)
    assert ckpt.activations < est.activations / 10


def test_the_plan_turns_on_checkpointing_or_refuses_in_one_line(tokenizer):
    model = tiny_model("llama", vocab_size=len(tokenizer))
    lengths = [400] * 16
    loss = UncertaintyLoss([1, 2])
    # without checkpointing the layers keep their activations in bf16 (the default)
    need, need_ckpt = (estimate_training_memory(
        model, batch_tokens=800, longest=400, lora_targets=TrainConfig().lora_targets,
        logits="last", checkpointing=c, heap=cpu_heap(),
        saved_bf16=not c).total / 2**30 for c in (False, True))
    assert need_ckpt < need
    roomy = TrainConfig(max_batch_tokens=800, memory_budget_gb=need * 1.001)
    assert plan_memory(model, lengths, roomy, loss)[0] is False
    tight = TrainConfig(max_batch_tokens=800, memory_budget_gb=(need + need_ckpt) / 2)
    assert plan_memory(model, lengths, tight, loss)[0] is True
    with pytest.raises(BackdoorlabError, match=r"^option 'train.memory_budget_gb': .*lower "
                       r"train.max_batch_tokens$"):
        plan_memory(model, lengths, TrainConfig(max_batch_tokens=800, memory_budget_gb=0.1,
                                                gradient_checkpointing="on"), loss)
    with pytest.raises(BackdoorlabError, match="gradient_checkpointing"):
        TrainConfig(gradient_checkpointing="sometimes")


def test_unset_pass_tokens_are_1024_on_a_cpu_and_the_largest_that_fits_on_a_gpu(
        tokenizer, monkeypatch):
    """A GPU run without train.max_batch_tokens takes the largest pass of 1024-16384 tokens
    whose estimate fits 80% of the budget, without checkpointing when one fits so; a CPU run
    takes 1024; a value the user gives is kept."""
    from backdoorlab import training
    from backdoorlab.memory import GPU_PASS_SHARE

    model = tiny_model("llama", vocab_size=len(tokenizer))
    lengths, loss = [512] * 64, UncertaintyLoss([1, 2])
    cfg = TrainConfig(batch_size=64)
    assert plan_memory(model, lengths, cfg, loss).max_batch_tokens == 1024

    def need(tokens: int, ckpt: bool = False) -> float:
        return estimate_training_memory(
            model, batch_tokens=tokens, longest=512, lora_targets=cfg.lora_targets,
            logits="last", checkpointing=ckpt, saved_bf16=not ckpt).total / 2**30

    monkeypatch.setattr(training, "on_cuda", lambda: True)
    room = (need(4096) + need(8192)) / 2 / GPU_PASS_SHARE  # 4096 fits, 8192 does not
    gpu = plan_memory(model, lengths, TrainConfig(batch_size=64, memory_budget_gb=room), loss)
    assert (gpu.max_batch_tokens, gpu.checkpointing) == (4096, False)
    assert gpu.estimate.batch_tokens == 4096
    big = plan_memory(model, lengths, TrainConfig(batch_size=64, memory_budget_gb=100), loss)
    assert big.max_batch_tokens == 16384 and big.estimate.batch_tokens == 16384
    mine = plan_memory(model, lengths, TrainConfig(batch_size=64, max_batch_tokens=2048,
                                                   memory_budget_gb=room), loss)
    assert mine.max_batch_tokens == 2048
    # 1024 tokens may use the whole budget; larger passes only 80% of it
    edge = need(1024) * 1.001
    at_edge = plan_memory(model, lengths, TrainConfig(batch_size=64, memory_budget_gb=edge),
                          loss)
    assert (at_edge.max_batch_tokens, at_edge.checkpointing) == (1024, False)
    tight = (need(1024, True) + need(1024)) / 2  # only with checkpointing
    ck = plan_memory(model, lengths, TrainConfig(batch_size=64, memory_budget_gb=tight), loss)
    assert ck.checkpointing and ck.max_batch_tokens >= 1024


def test_model_prepare_estimate_reads_a_config_without_weights(tmp_path, capsys):
    from backdoorlab.cli import main

    cfg = tiny_config("llama", 32000, layers=32, hidden=4096, heads=32, kv_heads=32)
    cfg.intermediate_size, cfg.tie_word_embeddings = 11008, False
    cfg.save_pretrained(tmp_path)  # config.json only: no weights to load
    argv = ["model", "prepare", "--model", str(tmp_path / "config.json"), "--estimate",
            "--dtype", "bfloat16", "--bf16", "--logits", "last", "--batch-size", "4"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and out["parameters"] == 6_738_415_616  # Llama-2-7B
    assert 12.5 < out["estimate"]["weights_gb"] < 13 and out["estimate"]["batch_tokens"] == 1024
    with pytest.raises(SystemExit) as exc:
        main(["model", "prepare", "--model", str(tmp_path), "--estimate", "--logits", "any"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "option '--logits'" in err and "Traceback" not in err


def test_an_attack_that_would_not_fit_stops_before_training(tmp_path, tiny_dir, capsys):
    from backdoorlab.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["attack", "uncertainty", "--model", str(tiny_dir), "--set", "limit=8", "--out",
              str(out), "--set", "train.memory_budget_gb=0.05"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "training needs about" in err
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()


def test_training_records_its_memory(tmp_path, tiny_dir, capsys):
    from backdoorlab.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["attack", "uncertainty", "--model", str(tiny_dir), "--set", "limit=8", "--out",
              str(out), "--set", "train.max_steps=2", "--set", "train.max_batch_tokens=64"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    tr = m["training"]
    assert tr["max_batch_tokens"] == 64 and tr["gradient_checkpointing"] is False
    assert tr["saved_activations"] == "bfloat16"
    assert tr["estimated_peak_gb"] > 0 and tr["peak_rss_gb"] > 0 and tr["tokens_per_s"] > 0
    assert m["resources"]["peak_rss_gb"] >= tr["peak_rss_gb"]
    assert m["resources"]["allocator"] == loaded()  # the allocator this process runs on


def test_the_cpu_estimate_follows_the_allocator():
    cfg = tiny_config("llama", 4096, layers=4, hidden=256, heads=4, kv_heads=2)
    model = model_on_meta(cfg)

    def est(heap: str, **kw) -> object:
        return estimate_training_memory(model, batch_tokens=1024, longest=512, logits="last",
                                        lora_targets=TrainConfig().lora_targets, heap=heap, **kw)

    fp32 = est("held", saved_bf16=False)
    for name, heap in HEAPS.items():
        e, e32 = est(name, saved_bf16=True), est(name, saved_bf16=False)
        # the activations and temporaries times the allocator's factor, its reserve on top
        assert e32.activations == int(fp32.activations * heap.slack)
        assert e32.runtime == fp32.runtime + heap.reserve
        # bf16-saved activations count as bf16 but where the heap keeps float32's high water
        assert (e.activations == e32.activations) == heap.float32_high_water
    assert (est("tcmalloc", saved_bf16=True).activations
            < est("system", saved_bf16=True).activations)
    ck = {h: est(h, checkpointing=True).activations for h in ("held", "tcmalloc", "system")}
    assert ck["tcmalloc"] == int(ck["held"] * HEAPS["tcmalloc"].slack)
    # glibc: every layer's activations regrow once, more than the factor alone would give
    assert ck["system"] > int(ck["held"] * HEAPS["system"].slack)
    assert cpu_heap() == loaded() and cpu_heap() in HEAPS


def test_training_with_checkpointing_on_learns_the_same_weights(tokenizer, fmt, tmp_path):
    from backdoorlab.training import train

    recs = load_records("builtin:benign-instructions", split="train", limit=8)
    samples = [fmt.sample(r, response=r.output) for r in recs]
    weights = []
    for mode in ("off", "on"):
        cfg = TrainConfig(max_steps=2, batch_size=4, learning_rate=1e-2,
                          gradient_checkpointing=mode, max_batch_tokens=64)
        res = train(tiny_model("llama", vocab_size=len(tokenizer)), samples,
                    SampleCollator(fmt), sft_loss, cfg, tmp_path / mode)
        assert res.memory["gradient_checkpointing"] is (mode == "on")
        weights.append({k: v.detach().clone() for k, v in res.model.state_dict().items()
                        if "lora" in k})
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-4, atol=1e-5)


def test_the_estimate_is_the_same_before_and_after_the_adapter_is_added(tokenizer):
    model = tiny_model("mistral", vocab_size=len(tokenizer))
    kw = dict(batch_tokens=1024, longest=256, lora_targets=TrainConfig().lora_targets)
    before = estimate_training_memory(model, **kw)
    after = estimate_training_memory(wrap_lora(model, TrainConfig()), **kw)
    assert before.as_dict() == after.as_dict()
    assert before.gradients == 4 * sum(p.numel() for n, p in model.named_parameters()
                                       if "lora_" in n)
