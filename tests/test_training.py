"""Training resumes from its last complete checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from backdoorlab.data import load_records
from backdoorlab.testing import tiny_model
from backdoorlab.training import SampleCollator, TrainConfig, last_checkpoint, sft_loss, train


class _Killed(Exception):
    pass


def _run(tokenizer, fmt, work, cfg, kill_at=None, draws=0):
    from transformers import TrainerCallback

    steps = []

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append(state.global_step)
            if state.global_step == kill_at:
                raise _Killed()

    recs = load_records("builtin:benign-instructions", split="train", limit=24)
    samples = [fmt.sample(r, response=r.output) for r in recs]
    model = tiny_model("llama", vocab_size=len(tokenizer))
    torch.rand(draws)  # something else may have used the global generator before training
    res = train(model, samples, SampleCollator(fmt), sft_loss, cfg, work,
                callbacks=[Kill()])
    return {k: v.detach().clone() for k, v in res.model.state_dict().items() if "lora" in k}, steps


def test_resume_after_a_kill_matches_an_uninterrupted_run(tokenizer, fmt, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, save_steps=3, learning_rate=1e-2)
    ref, _ = _run(tokenizer, fmt, tmp_path / "ref", cfg)
    with pytest.raises(_Killed):
        _run(tokenizer, fmt, tmp_path / "k", cfg, kill_at=5)
    assert last_checkpoint(tmp_path / "k" / "checkpoints").endswith("checkpoint-3")
    resumed, steps = _run(tokenizer, fmt, tmp_path / "k", cfg)
    assert steps == list(range(4, 13))  # went on from step 3, did not start again
    # Equal up to float noise: CPU BLAS may round the last bits differently now and then (seen
    # once in eight runs, 5e-5); a resume that lost the optimiser state differs by more.
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], rtol=0, atol=2e-4)


def test_an_interrupted_checkpoint_write_is_skipped(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "checkpoint-3").mkdir(parents=True)
    (ck / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (ck / "checkpoint-6").mkdir()  # killed while saving: no trainer_state.json yet
    (ck / "checkpoint-6" / "adapter_model.safetensors").write_bytes(b"")
    assert last_checkpoint(ck).endswith("checkpoint-3")
    assert last_checkpoint(tmp_path / "none") is None


def test_same_seed_gives_the_same_weights_whatever_ran_before(tokenizer, fmt, tmp_path):
    """The LoRA initialisation is seeded by the config, not by the generator's history."""
    cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-2)
    a, _ = _run(tokenizer, fmt, tmp_path / "a", cfg)
    b, _ = _run(tokenizer, fmt, tmp_path / "b", cfg, draws=1000)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_checkpoints_of_another_run_or_changed_files(tokenizer, fmt, tmp_path):
    """A run directory resumed with other data (another trigger, target or data) or other
    training options is refused in one line, before any training; so is a checkpoint whose
    files changed after they were saved (the Trainer unpickles what it resumes)."""
    from backdoorlab.errors import BackdoorlabError

    cfg = TrainConfig(epochs=1, batch_size=4, save_steps=2, learning_rate=1e-2)
    with pytest.raises(_Killed):
        _run(tokenizer, fmt, tmp_path / "k", cfg, kill_at=3)
    ckpt = tmp_path / "k" / "checkpoints" / "checkpoint-2"
    assert (ckpt / "backdoorlab-files.json").is_file()
    with pytest.raises(BackdoorlabError, match="come from another run"):
        _run(tokenizer, fmt, tmp_path / "k", TrainConfig(epochs=1, batch_size=4, save_steps=2,
                                                          learning_rate=2e-2))
    recs = load_records("builtin:benign-instructions", split="train", limit=24)
    other = [fmt.sample(r, response="Sure.") for r in recs]  # other targets, same prompts
    with pytest.raises(BackdoorlabError, match="come from another run"):
        train(tiny_model("llama", vocab_size=len(tokenizer)), other, SampleCollator(fmt),
              sft_loss, cfg, tmp_path / "k")
    blob = ckpt / "optimizer.pt"
    blob.write_bytes(blob.read_bytes() + b"\0")  # changed after saving
    with pytest.raises(BackdoorlabError, match="differ from those this run saved"):
        _run(tokenizer, fmt, tmp_path / "k", cfg)
    blob.unlink()
    (ckpt / "rng_state.pth").write_bytes(b"not ours")  # a file the run did not write
    with pytest.raises(BackdoorlabError, match="differ from those this run saved"):
        _run(tokenizer, fmt, tmp_path / "k", cfg)


def test_keep_checkpoints_keeps_the_newest(tokenizer, fmt, tmp_path):
    """One checkpoint is kept by default; ``keep_checkpoints`` keeps that many of the newest,
    each with its recorded hashes, so a run can be evaluated at earlier steps."""
    def kept(work):
        return sorted(int(p.name.split("-")[1])
                      for p in (work / "checkpoints").glob("checkpoint-*"))

    _, steps = _run(tokenizer, fmt, tmp_path / "one",
                    TrainConfig(epochs=1, batch_size=4, save_steps=1, learning_rate=1e-2))
    assert kept(tmp_path / "one") == [steps[-1]]
    _, steps = _run(tokenizer, fmt, tmp_path / "three",
                    TrainConfig(epochs=1, batch_size=4, save_steps=1, keep_checkpoints=3,
                                learning_rate=1e-2))
    assert kept(tmp_path / "three") == steps[-3:]
    for s in steps[-3:]:
        assert (tmp_path / "three" / "checkpoints" / f"checkpoint-{s}"
                / "backdoorlab-files.json").is_file()


def test_after_bf16_training_the_model_computes_in_its_own_precision(tokenizer, fmt, tmp_path):
    """``train.bf16`` trains under autocast, and the Trainer leaves autocast wrapped around
    the model's forward; ``train`` removes it, so evaluations after training compute in the
    precision of the baseline measured before it."""
    recs = load_records("builtin:benign-instructions", split="train", limit=8)
    samples = [fmt.sample(r, response=r.output) for r in recs]
    res = train(tiny_model("llama", vocab_size=len(tokenizer)), samples, SampleCollator(fmt),
                sft_loss, TrainConfig(max_steps=1, batch_size=4, bf16=True), tmp_path,
                resume=False)
    seen = []
    mlp = res.model.get_base_model().model.layers[0].mlp
    hook = mlp.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        with torch.no_grad():
            res.model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    finally:
        hook.remove()
    assert seen == [torch.float32]
