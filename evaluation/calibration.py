"""Epsilon calibration, as in the paper's table: does the achieved error respect the requested one?

For each requested epsilon: the share of images whose reconstruction L1 exceeds eps + offset for offsets
0, 0.01, 0.02, ... and the mean L1 of those images (METHOD.md section 6: at eps 0.05 the paper finds 10%
above eps and 3% above eps + 0.01).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DEFAULT_OFFSETS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05)


def calibration_row(l1: np.ndarray, epsilon: float, offsets: Sequence[float] = DEFAULT_OFFSETS) -> list[dict]:
    """l1: (num_images,) achieved errors at the requested epsilon -> one dict per offset."""
    l1 = np.asarray(l1, dtype=np.float64)
    if l1.size == 0:
        raise ValueError("calibration needs at least one image")
    rows = []
    for offset in offsets:
        threshold = epsilon + offset
        above = l1[l1 > threshold]
        rows.append(
            {
                "offset": float(offset),
                "threshold": float(threshold),
                "share_above": float(above.size / l1.size),
                "num_above": int(above.size),
                "mean_l1_of_above": float(above.mean()) if above.size else math.nan,
            }
        )
    return rows


def calibration_table(l1_by_epsilon: dict[float, np.ndarray], offsets: Sequence[float] = DEFAULT_OFFSETS) -> dict:
    """{epsilon: l1 array} -> JSON-ready section: per epsilon its rows and the mean achieved L1."""
    return {
        "offsets": [float(o) for o in offsets],
        "per_epsilon": {
            f"{eps:g}": {
                "mean_l1": float(np.mean(l1)),
                "rows": calibration_row(l1, eps, offsets),
            }
            for eps, l1 in l1_by_epsilon.items()
        },
    }
