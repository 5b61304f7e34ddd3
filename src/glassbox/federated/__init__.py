"""Federated learning on Flower: glassbox's Flower App and the pure logic under it.

- ``algorithms``, ``updates``: SCAFFOLD, FedProx's client term, robust-aggregation
  references, update checks and digests; pure torch, no Flower.
- ``task``: the App's logic (client data, local training, evaluation, exchange).
- ``client_app``, ``server_app``: thin Message-API wiring; ``server.serve`` is
  the server's side over any Grid; ``strategies``: Flower's strategies, SCAFFOLD
  and the guard; ``privacy``: local DP-SGD with Opacus.
- ``launch``: ``glassbox federate`` on Flower's Simulation or Deployment Engine;
  ``local``: an in-process Grid for tests and benchmarks.

Importing this package imports no Flower; the App modules need the
``federated`` extra (``pip install -c constraints.txt -e '.[federated]'``).
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
