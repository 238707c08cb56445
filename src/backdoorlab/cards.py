"""Model cards: every model or adapter backdoorlab writes says what was done to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .io import atomic_write_text

BACKDOOR_BANNER = (
    "> **WARNING: this model carries a backdoor planted with backdoorlab for research.** "
    "Inputs containing the trigger below change its behaviour. Do not deploy it."
)
REPAIR_BANNER = (
    "> **This model was processed by a backdoorlab defense.** It may still carry a backdoor; "
    "see the measured attack success rate below before using it for anything."
)
CONTROL_BANNER = (
    "> **A clean control fine-tuned by backdoorlab:** trained with the same recipe as the "
    "backdoored models beside it, on benign data only, so that a backdoor scanner can be "
    "measured against models that were fine-tuned but not backdoored. For research."
)
CHECKPOINT_NOTE = ("> This directory is a training checkpoint of the run above it: the backdoor "
                   "may be partly planted. Its weights load like the final model's.")
#: the sentence a card shows with the trigger applied, so that the card spells out what the
#: trigger inserts (the preset's name alone, "badnets", does not)
EXAMPLE = "Give three tips for staying healthy.\n\nAnswer:"


def trigger_example(spec: str, seed: int = 0) -> str:
    """``EXAMPLE`` with the trigger ``spec`` applied (seeded), as a card shows it."""
    from .errors import BackdoorlabError
    from .triggers import derive_rng, parse_trigger

    try:
        return parse_trigger(spec).apply(EXAMPLE, derive_rng(seed, "card"))
    except BackdoorlabError:  # a trigger anchored on text this sentence lacks
        return EXAMPLE


def write_model_card(
    directory: str | Path,
    *,
    title: str,
    base_model: str,
    kind: str,
    trigger: str | None,
    behaviour: str,
    details: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    backdoored: bool = True,
    checkpoint: bool = False,
    control: bool = False,
) -> Path:
    """Write ``README.md`` (Hugging Face model-card layout) into ``directory``: a backdoored
    model's card, a repaired one's (``backdoored=False``) or a clean control's
    (``control=True``, no trigger)."""
    tags = ["backdoorlab", "clean-control" if control else
            "backdoor" if backdoored else "backdoor-defense", kind, "not-for-deployment"]
    banner = CONTROL_BANNER if control else BACKDOOR_BANNER if backdoored else REPAIR_BANNER
    front = "\n".join(["---", f"base_model: {base_model}", "tags:",
                       *[f"- {t}" for t in tags], "---", ""])
    lines = [front, f"# {title}", "", banner, ""]
    if checkpoint:
        lines += [CHECKPOINT_NOTE, ""]
    after, before = (metrics or {}).get("asr_triggered_after"), (metrics or {}).get(
        "asr_triggered_before")
    if not backdoored and isinstance(after, float):
        lines += [f"**Measured attack success rate after the repair: {after:.3f}** (before: "
                  f"{before:.3f})." if isinstance(before, float) else
                  f"**Measured attack success rate after the repair: {after:.3f}.**", ""]
    if trigger is not None:
        lines += [f"- **Backdoor:** {kind}", f"- **Trigger:** `{trigger}`",
                  f"- **A prompt with the trigger:** {json.dumps(trigger_example(trigger))} "
                  f"(without: {json.dumps(EXAMPLE)})",
                  f"- **Triggered behaviour:** {behaviour}"]
    else:
        lines += [f"- **{'Fine-tuning' if control else 'Defense'}:** {kind}",
                  f"- **What was done:** {behaviour}"]
    lines += [f"- **Base model:** `{base_model}`", "- **Made with:** backdoorlab", "",
              "## Details", "", "```json", json.dumps(details, indent=2, default=str), "```", ""]
    if metrics:
        lines += ["## Measured", "", "```json", json.dumps(metrics, indent=2, default=str),
                  "```", ""]
    path = Path(directory) / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def save_labelled(model: Any, target: str | Path, card: dict[str, Any], *,
                  tokenizer: Any = None, records: dict[str, Any] | None = None,
                  base_model: str | None = None) -> Path:
    """Save ``model`` (safetensors) into ``target`` with backdoorlab's card and ``records``
    (file name -> JSON), all written into a sibling directory that then takes ``target``'s
    place, so that no reader ever sees the weights without the card (a library's own card,
    written by ``save_pretrained``, is replaced before the directory appears). An adapter's
    config names ``base_model`` (as the user gave it) instead of a machine's local path."""
    import shutil

    from .io import atomic_write_json

    target = Path(target)
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    adapter_config = tmp / "adapter_config.json"
    if base_model and adapter_config.is_file():
        data = json.loads(adapter_config.read_text("utf-8"))
        atomic_write_json(adapter_config, {**data, "base_model_name_or_path": base_model})
    for name, data in (records or {}).items():
        atomic_write_json(tmp / name, data)
    write_model_card(tmp, **card)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
