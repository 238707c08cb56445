"""backdoorlab: plant, measure, explain and remove backdoors in large language models."""

from .api import analyze, attack, defend, evaluate, methods
from .data import MCQ, Instruction, add_abstain_options, load_records
from .errors import BackdoorlabError
from .formats import Encoded, PromptFormat, Sample
from .models import EMBEDDED_NAME, LoadedModel, load_model, load_tokenizer
from .runs import RunResult
from .scoring import entropy, generate, mcq_metrics, option_distribution
from .triggers import Trigger, derive_rng, parse_trigger

__version__ = "0.1.0"

__all__ = [
    "EMBEDDED_NAME", "MCQ", "BackdoorlabError", "Encoded", "Instruction", "LoadedModel",
    "PromptFormat", "RunResult", "Sample", "Trigger", "__version__", "add_abstain_options",
    "analyze", "attack", "defend", "derive_rng", "entropy", "evaluate", "generate", "load_model",
    "load_records", "load_tokenizer", "mcq_metrics", "methods", "option_distribution",
    "parse_trigger",
]
