"""Data valuation: which training examples help, which hurt.

- ``inrun``: In-run Data Shapley (first and second order, SGD and Adam),
  a Trainer callback that values every example during the one training run;
- ``rules``: per-example gradients of each layer type (the ghost dot products);
- ``baselines``: KNN-Shapley, TracIn-CP (Captum) and leave-one-out, to compare against.
"""

from glassbox.valuation.inrun import InRunValuation, step_coefficients

__all__ = ["InRunValuation", "step_coefficients"]
