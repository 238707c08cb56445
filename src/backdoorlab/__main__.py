"""``python -m backdoorlab`` runs the command line."""

from .cli import entry

entry()
