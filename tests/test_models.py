"""Model loading: safetensors only, pickles refused, GGUF checked, no remote code by default."""

import json
import os
from pathlib import Path

import pytest
import torch

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import (
    EMBEDDED_SHA256,
    check_safe_weights,
    convert_gguf,
    default_device,
    embedded_gguf_path,
    load_model,
    resolve_model_path,
    sha256_file,
)
from backdoorlab.testing import tiny_model


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(BackdoorlabError, match="only in pickle format.*never unpickles"):
        load_model(str(tmp_path))


def test_directory_without_weights(tmp_path):
    with pytest.raises(BackdoorlabError, match="no \\*.safetensors weights"):
        check_safe_weights(tmp_path)


def test_safetensors_directory_roundtrip(tmp_path, tokenizer):
    model = tiny_model("qwen2", vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    ids = torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(lm.model(ids).logits, model(ids).logits)
    assert lm.tokenizer.pad_token_id is not None


def test_missing_paths_and_bad_gguf(tmp_path):
    with pytest.raises(BackdoorlabError, match="no such GGUF file"):
        resolve_model_path(str(tmp_path / "x.gguf"))
    with pytest.raises(BackdoorlabError, match="no such model directory"):
        resolve_model_path("./nope/model")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_gguf_checksum_mismatch_is_refused(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BackdoorlabError, match="does not match the expected"):
        convert_gguf(fake, tmp_path / "out", expected_sha256=EMBEDDED_SHA256)
    assert not (tmp_path / "out").exists()


def test_embedded_wheel_checksum():
    assert sha256_file(embedded_gguf_path()) == EMBEDDED_SHA256


def test_trust_remote_code_is_off_by_default(tmp_path, monkeypatch, tokenizer):
    seen = {}
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    model = tiny_model("llama", vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    load_model(str(tmp_path))
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True
    assert os.environ["USE_HUB_KERNELS"] == "NO"  # no kernels fetched from the Hub
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")  # unless the user asks for them
    load_model(str(tmp_path))
    assert os.environ["USE_HUB_KERNELS"] == "YES"


def test_the_device_comes_from_the_environment_or_the_gpu(monkeypatch):
    monkeypatch.delenv("BACKDOORLAB_DEVICE")
    assert default_device() == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("BACKDOORLAB_DEVICE", "cpu")
    assert default_device() == "cpu"
    monkeypatch.setenv("BACKDOORLAB_DEVICE", "gpu0")
    with pytest.raises(BackdoorlabError, match=r"^BACKDOORLAB_DEVICE='gpu0': not a device"):
        default_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("BACKDOORLAB_DEVICE", "cuda")
        with pytest.raises(BackdoorlabError, match="sees no CUDA device"):
            default_device()


def test_adapter_must_be_safetensors(tmp_path, tiny_models):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"x")
    from backdoorlab.models import load_adapter

    with pytest.raises(BackdoorlabError, match="pickled adapters are refused"):
        load_adapter(tiny_models["llama"], tmp_path)


def test_a_cpu_device_keeps_training_and_budgets_on_the_cpu(monkeypatch, tmp_path):
    """BACKDOORLAB_DEVICE=cpu on a GPU machine: the Trainer, the memory budget and the memory
    plan's CPU heap factor all follow it, not what PyTorch sees."""
    from backdoorlab import memory
    from backdoorlab.devices import on_cuda
    from backdoorlab.training import TrainConfig, training_arguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: pytest.fail("asked the GPU"))
    monkeypatch.setenv("BACKDOORLAB_DEVICE", "cpu")
    assert not on_cuda() and memory.available_memory() > 0
    assert "peak_gpu_gb" not in memory.peak_memory()
    assert training_arguments(TrainConfig(), tmp_path, 4).use_cpu
    monkeypatch.delenv("BACKDOORLAB_DEVICE")
    assert on_cuda()


def test_the_budget_counts_what_the_process_already_holds(monkeypatch):
    """The estimate counts the loaded weights and the runtime, so the budget is what is free
    plus what this process holds: on a GPU its allocator's reserve (the model loaded there),
    on a CPU its resident memory."""
    from backdoorlab import memory

    monkeypatch.setattr(memory, "on_cuda", lambda: True)
    monkeypatch.setattr(memory, "default_device", lambda: "cuda:0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 25 * 2**30)
    assert memory.available_memory() == 35 * 2**30
    monkeypatch.setattr(memory, "on_cuda", lambda: False)
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) * 1024
    meminfo = Path("/proc/meminfo").read_text()
    avail = int(next(x for x in meminfo.splitlines()
                     if x.startswith("MemAvailable:")).split()[1]) * 1024
    assert abs(memory.available_memory() - (avail + rss)) < 0.2 * (avail + rss)
