"""State shared by the painting modules while one phantom is built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .grid import Box, Canvas, Grid
from .layout import Layout
from .patient import Patient
from .tissues import TissueHU

TILE = 32


@dataclass
class Ctx:
    grid: Grid
    canvas: Canvas
    tissues: TissueHU
    patient: Patient
    layout: Layout
    rng: np.random.Generator
    options: object
    core_masks: dict[str, list[tuple[Box, np.ndarray]]] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    _tile: np.ndarray | None = None

    def hu(self, tissue: str) -> float:
        return self.tissues.hu[tissue]

    def texture(self, box: Box, offset: int = 0) -> np.ndarray:
        """Zero-mean, unit-SD smooth random texture (correlation ~1.5 voxels) on ``box``, periodic."""
        if self._tile is None:
            tile_rng = np.random.default_rng(self.patient.seed + 7919)
            tile = ndimage.gaussian_filter(tile_rng.standard_normal((TILE,) * 3), 1.2, mode="wrap")
            self._tile = ((tile - tile.mean()) / tile.std()).astype(np.float32)
        idx = [(np.arange(s.start, s.stop) + offset * (7 + 5 * n)) % TILE for n, s in enumerate(box.slices)]
        return self._tile[np.ix_(*idx)]
