"""Record types: what a dataset row means, independent of how it is rendered."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

LETTERS = string.ascii_uppercase[:10]
MIN_CHOICES, MAX_CHOICES = 2, 10
ABSTAIN_CHOICES = ("I don't know", "None of the above")


@dataclass(frozen=True)
class MCQ:
    """A multiple-choice question; ``answer`` is the letter of the correct choice."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    context: str | None = None
    subject: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "mcq"

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.choices)])

    @property
    def answer_index(self) -> int:
        return self.letters.index(self.answer)

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "question": self.question, "choices": list(self.choices),
               "answer": self.answer}
        if self.context:
            out["context"] = self.context
        if self.subject:
            out["subject"] = self.subject
        return out


@dataclass(frozen=True)
class Instruction:
    """An instruction (with optional input) and its reference response."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "instruction"

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "instruction": self.instruction, "input": self.input,
               "output": self.output}
        if self.category:
            out["category"] = self.category
        return out


Record = MCQ | Instruction


def prompt_key(rec: Record) -> str:
    """What a record asks, case and spacing ignored: an MCQ's question (and context) and an
    instruction (and input) that ask the same thing share a key, so evaluation questions that
    a model was trained on can be found and left out."""
    parts = (rec.question, rec.context or "") if isinstance(rec, MCQ) else (rec.instruction,
                                                                             rec.input)
    return "\n".join(" ".join(p.lower().split()) for p in parts)


def rotate_choices(rec: MCQ, shift: int) -> MCQ:
    """``rec`` with its options moved ``shift`` places earlier, cyclically; the answer letter
    follows its option. The id stays, so a trigger lands the same way in every order."""
    k = len(rec.choices)
    s = shift % k
    return replace(rec, choices=tuple(rec.choices[s:]) + tuple(rec.choices[:s]),
                   answer=rec.letters[(rec.answer_index - s) % k],
                   meta={**rec.meta, "rotation": s})


def rotations(rec: MCQ) -> list[MCQ]:
    """Every cyclic order of ``rec``'s options, the given order first. Scored together (see
    :func:`backdoorlab.scoring.rotation_average`) they cancel a preference for one letter,
    which on a near-chance model moves plain accuracy by several points."""
    return [rotate_choices(rec, s) for s in range(len(rec.choices))]


def with_rotations(recs: Sequence[MCQ]) -> list[MCQ]:
    """``recs`` as given, then every other cyclic order of each: the first ``len(recs)`` rows
    are the plain questions, and all rows together feed
    :func:`backdoorlab.scoring.rotation_average`."""
    return list(recs) + [rot for rec in recs for rot in rotations(rec)[1:]]


def add_abstain_options(rec: MCQ) -> MCQ:
    """The uncertainty paper's 6-option format: A-D plus "I don't know", "None of the above"."""
    if len(rec.choices) + len(ABSTAIN_CHOICES) > MAX_CHOICES:
        from ..errors import BackdoorlabError

        raise BackdoorlabError(f"record {rec.id!r}: {len(rec.choices)} choices leave no room for "
                               f"the {len(ABSTAIN_CHOICES)} abstain options (at most "
                               f"{MAX_CHOICES} choices)")
    return replace(rec, choices=tuple(rec.choices) + ABSTAIN_CHOICES)
