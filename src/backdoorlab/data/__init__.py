"""Records, loaders and the built-in datasets."""

from .builtin import BUILTIN, builtin_rows
from .loaders import load_records, load_split, read_rows, rows_to_records
from .records import (
    ABSTAIN_CHOICES,
    LETTERS,
    MCQ,
    Instruction,
    Record,
    add_abstain_options,
    prompt_key,
    rotate_choices,
    rotations,
    with_rotations,
)

__all__ = [
    "ABSTAIN_CHOICES", "BUILTIN", "LETTERS", "MCQ", "Instruction", "Record",
    "add_abstain_options", "builtin_rows", "load_records", "load_split", "prompt_key",
    "read_rows",
    "rotate_choices", "rotations", "rows_to_records", "with_rotations",
]
