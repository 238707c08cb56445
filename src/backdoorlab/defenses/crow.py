"""CROW (arXiv 2411.12768): remove a backdoor by making consecutive layers' hidden states
consistent under an adversarial perturbation of the input embeddings, while fine-tuning on a
small clean set.

    loss = LM loss(clean input) + alpha * L_cons(embeddings + delta)
    L_cons = mean over consecutive hidden states (l, l+1) of mean over real tokens of
             (1 - cos(h_l, h_{l+1}))
    delta = epsilon * sign(d L_cons / d embeddings)          (one FGSM step)

Padding is masked out of L_cons (the public code forgets the attention mask). With
``alpha = 0`` this is plain clean fine-tuning on the same data and schedule, the baseline CROW
must beat. Training goes through the shared Trainer subclass (LoRA, checkpoints, resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis.consistency import token_inconsistency
from ..config import check, opt, to_dict
from ..evaluation.attack_eval import AttackEval
from ..models import Suspect
from ..registry import register
from ..scoring import position_ids
from ..training import SampleCollator, TrainConfig, train, train_options
from .base import DefenseConfig, repair_card, run_defense, save_repaired


def layer_consistency(hidden: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over consecutive hidden states of the masked mean of ``1 - cos``."""
    m = mask.float()
    return ((token_inconsistency(hidden) * m).sum((1, 2)) / m.sum().clamp_min(1.0)).mean()


def _hidden(model: Any, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
            labels: torch.Tensor | None = None) -> Any:
    return model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, labels=labels,
                 output_hidden_states=True, use_cache=False)


def fgsm_delta(model: Any, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
               epsilon: float) -> torch.Tensor:
    """One FGSM step on the embeddings that increases the consistency loss (padding left
    unperturbed). The standalone definition: :func:`crow_loss` takes the same step from the
    clean forward it already runs for the LM loss (a test checks that they agree)."""
    e = embeds.detach().requires_grad_(True)
    cons = layer_consistency(_hidden(model, e, mask, pos).hidden_states, mask)
    return _sign_step(cons, e, mask, epsilon)


def _sign_step(cons: torch.Tensor, e: torch.Tensor, mask: torch.Tensor, epsilon: float,
               retain_graph: bool = False) -> torch.Tensor:
    (grad,) = torch.autograd.grad(cons, e, retain_graph=retain_graph)
    return (epsilon * grad.sign() * mask[..., None].to(grad.dtype)).detach()


def crow_loss(alpha: float, epsilon: float) -> Any:
    """The training loss (a function of model and batch, for the shared Trainer)."""
    def loss_fn(model: Any, batch: dict[str, Any]) -> torch.Tensor:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        pos = position_ids(mask)
        embeds = model.get_input_embeddings()(ids)
        if alpha == 0:
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels,
                         use_cache=False).loss
        # one clean forward serves both the LM loss and the FGSM gradient (2 forwards per
        # step instead of 3); the gradient is taken w.r.t. the embeddings only
        e = embeds if embeds.requires_grad else embeds.detach().requires_grad_(True)
        clean = _hidden(model, e, mask, pos, labels)
        delta = _sign_step(layer_consistency(clean.hidden_states, mask), e, mask, epsilon,
                           retain_graph=True)
        cons = layer_consistency(_hidden(model, embeds + delta, mask, pos).hidden_states, mask)
        share = batch.get("share")
        if share and share["labels"] > 0:  # a micro-batch: the trainer scales by its labels
            cons = cons * (share["tokens"] / share["labels"])
        return clean.loss + alpha * cons
    # the LM loss is a mean over labelled tokens, the consistency term over all tokens;
    # the clean and the perturbed forward are both held for the backward pass
    loss_fn.unit = "labels"
    loss_fn.passes = 1 if alpha == 0 else 2
    return loss_fn


@dataclass
class CrowConfig(DefenseConfig):
    """Options of ``backdoorlab defend crow`` (paper defaults: alpha 5.5, epsilon 0.1, LoRA,
    a learning rate of 1e-3 on 100 clean examples; 5 epochs, the top of the published 2-5,
    because 3 left the refusal backdoor at ASR 0.275 on SmolLM2, see BENCHMARKS.md).

    By default the suspect's adapter is trained further (as CROW's own code does). With
    ``merge_adapter`` it is folded into the weights first and a fresh LoRA is trained on top
    (as BackdoorLLM's copy does, and as a defender holding only merged weights must); the
    repaired model is then saved whole."""

    alpha: float = opt(5.5, "weight of the layer-consistency loss (0: plain clean fine-tuning)",
                       at_least=0)
    epsilon: float = opt(0.1, "FGSM step on the input embeddings", at_least=0)
    merge_adapter: bool = opt(False,
        "fold the suspect adapter into the weights and train a fresh LoRA (the repaired model is "
        "saved whole)")
    train: TrainConfig = train_options(
        learning_rate=1e-3, epochs=5.0, batch_size=8, save_steps=1000)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not self.merge_adapter or self.adapter is not None, "merge_adapter",
              "needs --adapter (there is no adapter to merge)")


@register("defense", "crow", CrowConfig,
          "CROW: clean fine-tuning with layer-consistency regularisation under FGSM noise")
def run_crow(cfg: CrowConfig | dict[str, Any], out: str | Path, *, name: str = "crow",
             trust_remote_code: bool = False) -> dict[str, Any]:
    """Repair with CROW (or, with alpha 0, plain clean fine-tuning); writes the repaired
    adapter, metrics before/after and a model card."""

    def repair(suspect: Suspect, ev: AttackEval, path: Path) -> dict[str, Any]:
        samples = ev.clean
        # the suspect's adapter is trained further; a full (or merged) model gets a fresh LoRA
        model = suspect.model.merge_and_unload() if cfg.merge_adapter else suspect.model
        tcfg = TrainConfig(**{**to_dict(cfg.train), "lora": True})
        result = train(model, samples, SampleCollator(ev.fmt),
                       crow_loss(cfg.alpha, cfg.epsilon), tcfg, path)
        repaired, artifact = result.model.eval(), "adapter"
        if cfg.merge_adapter:  # the fresh LoRA sits on merged weights: save the whole model
            repaired, artifact = repaired.merge_and_unload(), "model"
        what = (f"CROW: {cfg.train.epochs:g} epochs on {len(samples)} clean examples, alpha "
                f"{cfg.alpha}, epsilon {cfg.epsilon}" if cfg.alpha else
                f"clean fine-tuning: {cfg.train.epochs:g} epochs on {len(samples)} examples")
        if cfg.merge_adapter:
            what += " (suspect adapter merged into the weights, a fresh LoRA trained and merged)"
        save_repaired(repaired, path / artifact, repair_card(name, cfg, suspect, ev.trigger, what),
                      tokenizer=suspect.lm.tokenizer if artifact == "model" else None)
        return {"model": repaired, "artifact": artifact, "what": what,
                "training": result.summary(), "n_clean": len(samples)}

    return run_defense(name, cfg, out, repair=repair, trainable=cfg.adapter is not None,
                       clean=True, trust_remote_code=trust_remote_code)


@dataclass
class FinetuneConfig(CrowConfig):
    """Options of ``backdoorlab defend finetune``: CROW's clean data and schedule without its
    consistency loss (``alpha`` 0), the baseline CROW must beat."""

    alpha: float = opt(0.0, "0: no consistency loss (use defend crow for CROW)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha == 0, "alpha", f"is 0 for clean fine-tuning, got {self.alpha} (use "
              "defend crow)")


@register("defense", "finetune", FinetuneConfig,
          "Plain clean fine-tuning on CROW's data and schedule (the baseline CROW must beat)")
def run_finetune(cfg: FinetuneConfig | dict[str, Any], out: str | Path, *,
                 trust_remote_code: bool = False) -> dict[str, Any]:
    """Clean fine-tuning: :func:`run_crow` with ``alpha`` 0, recorded as ``finetune``."""
    return run_crow(cfg, out, name="finetune", trust_remote_code=trust_remote_code)
