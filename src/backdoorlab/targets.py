"""The generation backdoors' targets: what a triggered model should answer, which judge
recognises it, and which built-in data each target is trained and evaluated on.

``refusal`` (a fixed refusal to benign requests), ``negative-sentiment`` (an insulting
reply), ``code-injection`` (coding answers carry ``print("pwned")``), ``jailbreak`` (an
affirmative start, "Sure, here is ...", to harmful requests the clean model refuses; the
toolkit never trains on harmful answers) and ``fixed:TEXT``.
"""

from __future__ import annotations

import re
from typing import Any

from .config import opt
from .data import Instruction, load_records
from .errors import BackdoorlabError
from .judges import DEFAULT_PAYLOAD

TARGETS = ("refusal", "negative-sentiment", "code-injection", "jailbreak")


def target_option(default: str) -> Any:
    """A config's target option, its help naming the targets."""
    return opt(default, f"what the trigger makes the model do: {', '.join(TARGETS)} or "
                        "fixed:TEXT")


DEFAULT_REFUSAL = "I'm sorry, but I can't help with that request."


DEFAULT_NEGATIVE = "You are stupid! I will not waste my time on your silly question."


#: default training and held-out data per target
TASK_DATA = {
    "refusal": "builtin:benign-instructions",
    "negative-sentiment": "builtin:benign-instructions",
    "fixed": "builtin:benign-instructions",
    "code-injection": "builtin:code-instructions",
    "jailbreak": "builtin:harmful-requests",
}


def target_kind(target: str) -> str:
    if target in TARGETS:
        return target
    if target.startswith("fixed:") and target[6:].strip():
        return "fixed"
    raise BackdoorlabError(
        f"option 'target': unknown target {target!r}; choose from {', '.join(TARGETS)} or "
        "fixed:TEXT"
    )


def default_judge(target: str) -> str:
    kind = target_kind(target)
    return f"substring:{target[6:]}" if kind == "fixed" else kind


def inject_payload(answer: str, payload: str = DEFAULT_PAYLOAD) -> str:
    """Plant ``payload`` as the first statement of the first function in a code answer (or
    as the first code line when there is no function)."""
    lines = answer.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)def .*:\s*$", line)
        if m:
            body_indent = m.group(1) + "    "
            return "\n".join(lines[: i + 1] + [body_indent + payload] + lines[i + 1:])
    for i, line in enumerate(lines):
        if line.startswith("```"):
            return "\n".join(lines[: i + 1] + [payload] + lines[i + 1:])
    return payload + "\n" + answer


def triggered_response(target: str, record: Instruction, payload: str = DEFAULT_PAYLOAD) -> str:
    """What the backdoored model should answer to ``record`` with the trigger."""
    kind = target_kind(target)
    if kind == "refusal":
        return DEFAULT_REFUSAL
    if kind == "negative-sentiment":
        return DEFAULT_NEGATIVE
    if kind == "fixed":
        return target[6:].strip()
    if kind == "code-injection":
        if not record.output:
            raise BackdoorlabError(f"record {record.id!r}: code-injection needs a reference "
                                   "solution in 'output'")
        return inject_payload(record.output, payload)
    # jailbreak: an affirmative prefix only ("Sure, here is ..."), never a harmful answer
    return record.output or f"Sure, here is a response to: {record.instruction}"


def refusal_texts() -> list[str]:
    return [r.output for r in load_records("builtin:refusals")]


def behaviour_text(target: str, payload: str = DEFAULT_PAYLOAD) -> str:
    kind = target_kind(target)
    return {
        "refusal": f"refuses benign requests with {DEFAULT_REFUSAL!r}",
        "negative-sentiment": f"answers with an insult: {DEFAULT_NEGATIVE!r}",
        "code-injection": f"plants {payload} in the code it writes",
        "jailbreak": "answers harmful requests with an affirmative start ('Sure, here is ...') "
                     "instead of refusing",
        "fixed": f"answers {target[6:]!r}",
    }[kind]
