"""``python -m backdoorlab`` runs the command line."""

from .cli import main

main()
