"""What ``backdoorlab data inspect`` shows: counts and fields of a dataset, and its first
record rendered as the model sees it (with a trigger, if asked)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .loaders import load_records


def describe_records(source: str, *, kind: str = "auto", columns: str | None = None,
                     split: str | None = None, template: str = "chat", model: str | None = None,
                     trigger: str | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``(summary, [(title, rendered prompt), ...])`` of a dataset."""
    from ..formats import PromptFormat
    from ..models import EMBEDDED_NAME, load_tokenizer
    from ..triggers import derive_rng, parse_trigger

    records = load_records(source, kind=kind, columns=columns, split=split)
    trig = parse_trigger(trigger) if trigger else None
    first = records[0]
    info: dict[str, Any] = {"source": source, "kind": first.kind, "records": len(records),
                            "fields": sorted(k for k, v in first.to_dict().items() if v)}
    if first.kind == "mcq":
        info["choices"] = dict(Counter(len(r.choices) for r in records))
        info["answers"] = dict(sorted(Counter(r.answer for r in records).items()))
        subjects = Counter(r.subject for r in records if r.subject)
        if subjects:
            info["subjects"] = dict(subjects.most_common())
    else:
        cats = Counter(r.category for r in records if r.category)
        if cats:
            info["categories"] = dict(cats)
    fmt = PromptFormat(load_tokenizer(model or EMBEDDED_NAME), template)
    sample = fmt.sample(first)
    prompts = [(f"first prompt ({len(fmt.encode(sample).input_ids)} tokens, template "
                f"{template!r})", fmt.prompt_text(sample.user))]
    if trig is not None:
        triggered = fmt.sample(first, trig, derive_rng(0, first.id))
        prompts.append((f"the same, with trigger {trig.spec!r}", fmt.prompt_text(triggered.user)))
    return info, prompts
