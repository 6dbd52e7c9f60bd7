"""Batch super-resolution of study trees on a Dask cluster (``medsr batch``).

Needs the ``cluster`` extra: ``pip install "medsr[cluster]"``.

Example:
    >>> from medsr.batch import upscale_tree
    >>> rows = upscale_tree("study", "study_sr", method="bspline", workers=2)  # doctest: +SKIP
    >>> [r["input"] for r in rows if r["status"] == "error"]                    # doctest: +SKIP
"""

from __future__ import annotations

from medsr.batch.discover import Item, discover
from medsr.batch.engine import MANIFEST, upscale_tree
from medsr.batch.jobqueue import jobqueue_cluster, pbs_cluster, slurm_cluster
from medsr.batch.manifest import COLUMNS, read_manifest

__all__ = ["COLUMNS", "MANIFEST", "Item", "discover", "jobqueue_cluster", "pbs_cluster",
           "read_manifest", "slurm_cluster", "upscale_tree"]
