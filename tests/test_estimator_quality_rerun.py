"""benchmarks.estimator_quality --variants: one estimator measured again, the others kept."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import estimator_quality as Q  # noqa: E402


@pytest.mark.slow
def test_rerun_of_one_variant_keeps_the_others():
    small = {"gaussian copula": Q.VARIANTS["gaussian copula"], "hash": Q.VARIANTS["hash"]}
    suites = {k: {**Q.SUITES[k], "n": 300} for k in ("ranking bar", "abs 1ch")}
    with mock.patch.object(Q, "VARIANTS", small), mock.patch.object(Q, "SUITES", suites), \
            mock.patch.object(Q, "bias_table", return_value=[]):
        full = Q.run(quick=True)
        kept = [r for r in full["rows"] if r["variant"] == "gaussian copula"]
        for r in kept:
            r["spearman"] = 0.123  # marked: a rerun of "hash" must not touch these
        part = Q.run(quick=True, only=("hash",), previous=full)
    assert [r for r in part["rows"] if r["variant"] == "gaussian copula"] == kept
    assert part["summary"]["gaussian copula"]["spearman_linear"] == pytest.approx(0.123)
    assert {r["variant"] for r in part["rows"]} == {"gaussian copula", "hash"}
    assert len(part["rows"]) == len(full["rows"])
    assert len(part["suites"]["rows"]) == len(full["suites"]["rows"])
    assert part["rerun"] == {"variants": ["hash"], "others_from": full["created"]}
    assert part["bias"] == full["bias"]
    assert "Measured again on" in Q.markdown(part)
    with pytest.raises(SystemExit, match="unknown variant"):
        Q.run(quick=True, only=("nope",), previous=full)
    with pytest.raises(SystemExit, match="run the whole"):
        Q.run(quick=True, only=("hash",), previous=None)
