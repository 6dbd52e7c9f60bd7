"""Real sample data shipped with medsr (see README.md beside this file for credit)."""

from __future__ import annotations

from pathlib import Path

#: Brain MR, T1 post-contrast, 256×256×25, 0.78×0.78 mm in-plane, 6.5 mm slices, int16.
SAMPLE_MR = Path(__file__).with_name("mr_brain_t1c.nrrd")
