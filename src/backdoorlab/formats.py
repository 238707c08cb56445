"""The ONE prompt format: every record reaches the model through :class:`PromptFormat`.

Training, evaluation and analysis all call :meth:`PromptFormat.encode` on a :class:`Sample`, so a
record is rendered to the same text and token ids everywhere (BackdoorLLM's users lost 30+ ASR
points to a train/eval format mismatch). The position where an answer is read is
:attr:`Encoded.answer_index`: the last prompt token, defined here and nowhere else.

Rendering has two steps with the trigger in between, so a trigger only ever touches the user's
words and never the chat template's special tokens:

    record --user_text()--> user turn --trigger.apply()--> user turn --encode()--> token ids
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import opt
from .data.records import MCQ, Instruction, Record
from .errors import BackdoorlabError, unknown

TEMPLATES = {
    "chat": "the tokenizer's own chat template (default)",
    "plain": "the user text as is; the answer follows after one space (base models)",
    "alpaca": "the Alpaca '### Instruction: / ### Response:' template",
}
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{user}\n\n### Response:\n"
)
ANSWER_CUE = "Answer:"


def template_option(default: str = "chat", what: str = "prompt format") -> Any:
    """A config's prompt-format option, its help naming the templates."""
    names = list(TEMPLATES)
    return opt(default, f"{what}: {', '.join(names[:-1])} or {names[-1]}")


def mcq_instruction(subject: str | None) -> str:
    about = f" about {subject.replace('_', ' ')}" if subject else ""
    return (
        f"The following is a multiple-choice question{about}. "
        "Reply with the letter of the correct option."
    )


@dataclass(frozen=True)
class Sample:
    """A record as the model sees it: the user turn (trigger applied or not), the response
    to train on (if any), and the ground-truth poison label carried along."""

    record: Record
    user: str
    response: str | None = None
    poisoned: bool = False
    trigger: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True)
class Encoded:
    """Token ids of one sample. ``labels`` masks the prompt with -100."""

    input_ids: list[int]
    prompt_len: int

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_len]

    @property
    def answer_index(self) -> int:
        """Position whose logits predict the first answer token: the last prompt token."""
        return self.prompt_len - 1

    @property
    def labels(self) -> list[int]:
        return [-100] * self.prompt_len + self.input_ids[self.prompt_len:]


class PromptFormat:
    """Renders records to text and token ids, identically for training and evaluation.

    ``template``: ``chat`` (the tokenizer's chat template), ``plain`` or ``alpaca``.
    ``system``: an optional system message for chat templates (the template's own default
    otherwise).
    """

    def __init__(self, tokenizer: Any, template: str = "chat", system: str | None = None) -> None:
        if template not in TEMPLATES:
            raise unknown("prompt template", template, TEMPLATES)
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise BackdoorlabError(
                "option 'template': this tokenizer has no chat template; use 'plain' or 'alpaca'"
            )
        self.tokenizer = tokenizer
        self.template = template
        self.system = system
        self._letter_cache: dict[tuple[str, ...], list[int]] = {}
        self._stop_ids: list[int] | None = None

    # ---- text ---------------------------------------------------------------------------
    def user_text(self, record: Record) -> str:
        """The user turn for a record (before any trigger)."""
        if isinstance(record, MCQ):
            parts = [mcq_instruction(record.subject)]
            if record.context:
                parts.append(record.context)
            parts.append(record.question)
            parts.append("\n".join(f"{L}. {c}" for L, c in zip(record.letters, record.choices)))
            parts.append(ANSWER_CUE)
            return "\n\n".join(parts)
        if isinstance(record, Instruction):
            return record.instruction + (f"\n\n{record.input}" if record.input else "")
        raise TypeError(f"not a record: {type(record).__name__}")

    def _messages(self, user: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": user}]

    def prompt_text(self, user: str) -> str:
        """Everything the model reads before its answer."""
        if self.template == "chat":
            return self.tokenizer.apply_chat_template(
                self._messages(user), tokenize=False, add_generation_prompt=True
            )
        if self.template == "alpaca":
            return ALPACA.format(user=user)
        return user

    @property
    def response_lead(self) -> str:
        return " " if self.template == "plain" else ""

    def response_text(self, user: str, response: str) -> str:
        """What follows the prompt when the model answers ``response`` (with end-of-turn)."""
        if self.template == "chat":
            prompt = self.prompt_text(user)
            full = self.tokenizer.apply_chat_template(
                self._messages(user) + [{"role": "assistant", "content": response}],
                tokenize=False,
            )
            if full.startswith(prompt) and response in full[len(prompt):]:
                return full[len(prompt):].rstrip()
        return self.response_lead + response + (self.tokenizer.eos_token or "")

    # ---- tokens -------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        # chat templates write their own BOS; the others get the tokenizer's usual specials
        special = self.template != "chat"
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def prompt_ids(self, user: str) -> list[int]:
        return self._ids(self.prompt_text(user))

    def encode(self, sample: Sample | str, response: str | None = None) -> Encoded:
        """Token ids of a sample (or a user turn): prompt, then the response if given."""
        if isinstance(sample, Sample):
            user, response = sample.user, sample.response if response is None else response
        else:
            user = sample
        prompt = self.prompt_ids(user)
        if response is None:
            return Encoded(prompt, len(prompt))
        resp = list(
            self.tokenizer(self.response_text(user, response), add_special_tokens=False)[
                "input_ids"
            ]
        )
        return Encoded(prompt + resp, len(prompt))

    def sample(
        self,
        record: Record,
        trigger: Any = None,
        rng: Any = None,
        response: str | None = None,
    ) -> Sample:
        """Render ``record`` to a :class:`Sample`, applying ``trigger`` (poisoned) if given."""
        user = self.user_text(record)
        if trigger is not None:
            user = trigger.apply(user, rng)
        return Sample(
            record=record,
            user=user,
            response=response,
            poisoned=trigger is not None,
            trigger=trigger.spec if trigger is not None else None,
        )

    def option_token_ids(self, letters: Sequence[str]) -> list[int]:
        """Token id of each option letter as it is tokenised in place, after the prompt.

        Fails loudly unless each letter is exactly one known token there (the uncertainty
        paper's code looked up '▁A', which SmolLM2 does not have, and silently trained on
        the unknown id)."""
        key = tuple(letters)
        if key in self._letter_cache:
            return self._letter_cache[key]
        probe = self.prompt_text(f"Question?\n\n{ANSWER_CUE}")
        base = self._ids(probe)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        out = []
        for letter in key:
            ids = self._ids(probe + self.response_lead + letter)
            extra = ids[len(base):]
            if ids[: len(base)] != base or len(extra) != 1 or extra[0] == unk:
                raise BackdoorlabError(
                    f"option letter {letter!r} is not one token after the prompt with template "
                    f"{self.template!r} (got {extra}); choose another template"
                )
            out.append(extra[0])
        if len(set(out)) != len(out):
            raise BackdoorlabError(f"option letters {key} share token ids {out}")
        self._letter_cache[key] = out
        return out

    def stop_token_ids(self) -> list[int]:
        """EOS plus the special tokens that close an assistant turn in this template."""
        if self._stop_ids is None:
            eos = self.tokenizer.eos_token_id
            ids = {eos} if eos is not None else set()
            tail = self.response_text("x", "y")
            special = set(getattr(self.tokenizer, "all_special_ids", []))
            for tid in self.tokenizer(tail, add_special_tokens=False)["input_ids"]:
                if tid in special:
                    ids.add(tid)
            self._stop_ids = sorted(ids)
        return self._stop_ids

    def describe(self) -> dict[str, Any]:
        return {"template": self.template, "system": self.system}
