"""Attacks: each plants one kind of backdoor and writes a labelled run directory."""
