"""Records, loaders and the built-in datasets."""

from .builtin import BUILTIN, builtin_rows
from .loaders import (
    SOURCE_FORMS,
    load_records,
    load_split,
    read_rows,
    rows_to_records,
    source_option,
)
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
    "ABSTAIN_CHOICES", "BUILTIN", "LETTERS", "MCQ", "SOURCE_FORMS", "Instruction", "Record",
    "add_abstain_options", "builtin_rows", "load_records", "load_split", "prompt_key",
    "read_rows", "rotate_choices", "rotations", "rows_to_records", "source_option",
    "with_rotations",
]
