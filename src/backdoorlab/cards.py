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
) -> Path:
    """Write ``README.md`` (Hugging Face model-card layout) into ``directory``."""
    tags = ["backdoorlab", "backdoor" if backdoored else "backdoor-defense", kind,
            "not-for-deployment"]
    front = "\n".join(["---", f"base_model: {base_model}", "tags:",
                       *[f"- {t}" for t in tags], "---", ""])
    lines = [front, f"# {title}", "", BACKDOOR_BANNER if backdoored else REPAIR_BANNER, ""]
    if trigger is not None:
        lines += [f"- **Backdoor:** {kind}", f"- **Trigger:** `{trigger}`",
                  f"- **Triggered behaviour:** {behaviour}"]
    else:
        lines += [f"- **Defense:** {kind}", f"- **What was done:** {behaviour}"]
    lines += [f"- **Base model:** `{base_model}`", "- **Made with:** backdoorlab", "",
              "## Details", "", "```json", json.dumps(details, indent=2, default=str), "```", ""]
    if metrics:
        lines += ["## Measured", "", "```json", json.dumps(metrics, indent=2, default=str),
                  "```", ""]
    path = Path(directory) / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
