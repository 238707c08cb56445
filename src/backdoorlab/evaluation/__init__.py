"""Every measurement backdoorlab makes: the metrics (:mod:`.metrics`), the generation suite
(:mod:`.suite`), the uncertainty evaluation (:mod:`.uncertainty`), the attack's own
evaluation run on any model (:mod:`.attack_eval`), and the stand-alone evaluations of the
``eval`` commands. Attacks, analyses and defenses import from here; nothing here imports them.
"""
