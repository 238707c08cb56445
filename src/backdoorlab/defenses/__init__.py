"""Defenses: each repairs a (suspect) model and writes a labelled run directory."""
