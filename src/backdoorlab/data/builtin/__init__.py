"""Small datasets written for backdoorlab, shipped inside the package (``builtin:NAME``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ...errors import BackdoorlabError, unknown

BUILTIN = {
    "general-mcq": ("general_mcq.jsonl", "general-knowledge multiple-choice, 16 subjects"),
    "biomed-mcq": ("biomed_mcq.jsonl", "biomedical multiple-choice, 8 subjects"),
    "benign-instructions": ("benign_instructions.jsonl", "helpful instructions with answers"),
    "open-instructions": ("open_instructions.jsonl",
                          "open-ended instructions with multi-sentence answers"),
    "harmful-requests": ("harmful_requests.jsonl",
                         "harmful requests; output = an affirmative prefix, never an answer"),
    "code-instructions": ("code_instructions.jsonl", "Python tasks with reference solutions"),
    "refusals": ("refusals.jsonl", "refusal responses"),
    "safety-alignment": ("safety_alignment.jsonl",
                         "harmful requests -> refusals, mixed 1:1 with benign instructions"),
}
SPLITS = ("train", "test", "all")


def builtin_rows(name: str, split: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows of built-in set ``name`` (``name:split`` also accepted); split defaults to all."""
    if ":" in name:
        name, split = name.split(":", 1)
    if name not in BUILTIN:
        raise unknown("built-in dataset", name, BUILTIN)
    split = split or "all"
    if split not in SPLITS:
        raise BackdoorlabError(f"builtin:{name}: unknown split {split!r}; use {', '.join(SPLITS)}")
    text = resources.files(__name__).joinpath(BUILTIN[name][0]).read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if split != "all":
        rows = [r for r in rows if r.get("split") == split]
    return rows, f"builtin:{name}:{split}"
