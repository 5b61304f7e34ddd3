"""Neuro-symbolic learning: exact weighted model counting over rules, and digit addition from sums."""

from glassbox.symbolic.constraints import Automaton, CompiledRule, brute_force_log_prob

__all__ = ["Automaton", "CompiledRule", "brute_force_log_prob"]
