"""backdoorlab: plant, measure, explain and remove backdoors in large language models.

The names below are imported when first used, so ``import backdoorlab`` (and the CLI's
``--help``) does not load torch."""

from __future__ import annotations

import importlib
import logging
from typing import Any

# torchao (which peft imports when it is installed) logs the optional GPU kernels a CPU build
# lacks, and torch a note on each of its enum registrations: neither concerns a user
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "analyze": "api", "attack": "api", "defend": "api", "evaluate": "api", "methods": "api",
    "scan": "api", "detect": "api", "build_zoo": "api", "scan_zoo": "api",
    "MCQ": "data", "Instruction": "data", "add_abstain_options": "data", "load_records": "data",
    "BackdoorlabError": "errors", "Encoded": "formats", "PromptFormat": "formats",
    "Sample": "formats", "EMBEDDED_NAME": "embedded", "LoadedModel": "models",
    "load_model": "models", "load_tokenizer": "models", "RunResult": "runs",
    "entropy": "scoring", "generate": "scoring", "mcq_metrics": "scoring",
    "option_distribution": "scoring", "Trigger": "triggers", "derive_rng": "triggers",
    "parse_trigger": "triggers",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'backdoorlab' has no attribute {name!r}")
