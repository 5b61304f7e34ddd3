"""Federated learning: pure torch logic (algorithms, update checks) that glassbox's Flower apps call.

Nothing in this package imports Flower, so it is tested, and usable, without it.
"""

from glassbox.federated.algorithms import (
    ProximalTerm,
    ScaffoldCorrection,
    check_scaffold_config,
    coordinate_median,
    fedavg,
    krum,
    krum_select,
    scaffold_client_update,
    scaffold_server_update,
    trimmed_mean,
)
from glassbox.federated.updates import (
    check_update,
    flatten,
    state_digest,
    strip_prefix,
    unflatten,
    update_norm,
)

__all__ = [
    "ProximalTerm",
    "ScaffoldCorrection",
    "check_scaffold_config",
    "check_update",
    "coordinate_median",
    "fedavg",
    "flatten",
    "krum",
    "krum_select",
    "scaffold_client_update",
    "scaffold_server_update",
    "state_digest",
    "strip_prefix",
    "trimmed_mean",
    "unflatten",
    "update_norm",
]
