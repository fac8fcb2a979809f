"""The clinical report: ``report.pdf`` (page 1 spine, page 2 hip) from an analysis' result.

:func:`write_report` is what :func:`..pipeline.write_outputs` calls for every front end (CLI, demo, Slicer
and web Save report). :mod:`.identification` (who and what was scanned) is light; the pictures
(:mod:`.figures`, matplotlib) and the layout (:mod:`.pdf`, reportlab) are imported only when writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..volume import Volume

REPORT_NAME = "report.pdf"
def write_report(result: Any, ct: Volume, out_dir: str | Path, options: Any = None) -> Path:
    """Write ``out_dir/report.pdf`` for ``result`` (a :class:`..pipeline.AnalysisResult`) measured on ``ct``;
    ``options``: a :class:`.pdf.ReportOptions` (None: A4)."""
    from ..hip.analysis import HipPicture
    from . import figures
    from .pdf import ReportFigures, write_pdf

    trabecular = figures.trabecular_masks(result.rois)
    level = figures.axial_level(result.results, trabecular)
    pictures = ReportFigures(
        sagittal=figures.sagittal_png(ct, result.rois, result.results),
        axial=figures.axial_png(ct, result.rois, result.results, level),
        axial_level=level,
        hips={pic.side: figures.hip_png(pic) for pic in (result.pictures or {}).values()
              if isinstance(pic, HipPicture)},
    )
    return write_pdf(result.results, pictures, Path(out_dir) / REPORT_NAME, options)
