"""Right padding of tokenised rows into batch tensors, vectorised (shared by early exit and pre-training)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch


def padding_mask(lengths: np.ndarray, width: int | None = None) -> np.ndarray:
    """(B, W) bool, True on the real tokens of rows of `lengths`; W = `width` or the longest row."""
    width = int(lengths.max()) if width is None else width
    return np.arange(width)[None, :] < lengths[:, None]


def right_pad(rows: Sequence, keep: np.ndarray, fill: int) -> torch.Tensor:
    """Rows of ids (lists or int arrays) as a (B, W) int64 tensor, `fill` where `keep` (from `padding_mask`) is
    False: one flat copy scattered row-major under the mask; per-row tensor copies cost more than a GPU layer
    for a 256 x 128 batch."""
    if all(isinstance(r, np.ndarray) for r in rows):
        flat = np.concatenate(rows).astype(np.int64, copy=False) if len(rows) else np.empty(0, np.int64)
    else:
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(keep.sum()))
    out = np.full(keep.shape, fill, dtype=np.int64)
    out[keep] = flat  # row-major: row by row, left to right, as concatenated
    return torch.from_numpy(out)
