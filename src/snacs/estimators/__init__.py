"""The ACMI engine: mutual-information estimators and the per-layer-pair score matrix.

* `edge_mi`, `edge_cmi`: the EDGE hash estimator (SPEC §2) and its chain-rule CMI.
* `gaussian_cmi`, `knn_cmi`, `gmi_cmi`: Gaussian log-det, KSG-type and MINT's geometric CMI.
* `hash_cmi`: the canonical-pair hash CMI (1-D hash MI of the canonical pairs of each cell).
* `acmi_matrix`: ρ = φ · CMI for every (child group, parent group) cell of a layer pair (SPEC §3).
"""

from __future__ import annotations

from snacs.estimators._common import make_groups
from snacs.estimators.acmi import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    PHI_KINDS,
    acmi_matrix,
    cmi_matrix,
    phi_matrix,
)
from snacs.estimators.edge import EdgeOptions, edge_cmi, edge_cmi_columns, edge_mi
from snacs.estimators.gaussian import gaussian_cmi
from snacs.estimators.gmi import gmi_cmi
from snacs.estimators.hashcmi import hash_cmi, hash_mi_pairs
from snacs.estimators.knn import knn_cmi

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "PHI_KINDS",
    "EdgeOptions",
    "acmi_matrix",
    "cmi_matrix",
    "edge_cmi",
    "edge_cmi_columns",
    "edge_mi",
    "gaussian_cmi",
    "gmi_cmi",
    "hash_cmi",
    "hash_mi_pairs",
    "knn_cmi",
    "make_groups",
    "phi_matrix",
]
