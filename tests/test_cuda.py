"""The GPU path: with ``BACKDOORLAB_DEVICE=cuda`` every registered method and the evaluations
load their models onto the GPU and run there, training reports the GPU's peak, and a bf16
evaluation picks what the fp32 one picks. Skipped where PyTorch sees no CUDA device (the rest
of the suite pins the CPU, see ``conftest.py``)."""

from __future__ import annotations

import json

import pytest
import torch

from backdoorlab import api
from backdoorlab.catalog import get
from test_registry import METHODS, OPTIONS, suspect  # noqa: F401  (suspect: a fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
TRAINS = {("attack", "poison"), ("attack", "unalign"), ("attack", "uncertainty"),
          ("defense", "crow"), ("defense", "finetune"), ("defense", "realign")}


@pytest.fixture
def on_gpu(monkeypatch):
    monkeypatch.setenv("BACKDOORLAB_DEVICE", "cuda")
    torch.cuda.reset_peak_memory_stats()


@pytest.mark.parametrize("family,name", METHODS)
def test_every_method_runs_on_the_gpu(family, name, tiny_dir, suspect, tmp_path,  # noqa: F811
                                      on_gpu):
    from backdoorlab.models import load_model

    assert load_model(str(tiny_dir)).model.device.type == "cuda"
    options = dict(OPTIONS[(family, name)], model=str(tiny_dir))
    if family != "attack":
        options["adapter"] = [str(suspect.adapter)] if name == "neurons" else str(suspect.adapter)
    res = get(family, name).run(options, tmp_path / name)
    metrics = json.loads((res.out_dir / "metrics.json").read_text())
    if (family, name) in TRAINS:
        assert '"peak_gpu_gb"' in json.dumps(metrics), "training did not report the GPU peak"
    assert torch.cuda.max_memory_allocated() > 0


def test_evaluations_run_on_the_gpu_and_bf16_picks_match(tiny_dir, suspect, tmp_path,  # noqa: F811
                                                         on_gpu):
    picks = {}
    for dtype in ("float32", "bfloat16"):
        res = api.evaluate("mcq", model=str(tiny_dir), limit=12, dtype=dtype, batch_size=4,
                           recheck_margin=0.05 if dtype == "bfloat16" else None,
                           out=tmp_path / dtype)
        assert res.metrics["4_options"]["n"] == 12
        picks[dtype] = [json.loads(x)["pick"] for x in
                        (tmp_path / dtype / "answers.jsonl").read_text().splitlines()]
    assert picks["float32"] == picks["bfloat16"]
    gen = api.evaluate("generate", model=str(tiny_dir), adapter=str(suspect.adapter),
                       eval_limit=2, mcq_limit=4, max_new_tokens=2, eval_batch_size=2)
    assert "asr" in json.dumps(gen.metrics)
