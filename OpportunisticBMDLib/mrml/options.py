"""The analysis options as the panels give them: :class:`..settings.AnalysisOptions` from None or a dict,
and the composition fields (percent) as ``calibration_params``. No slicer import (the module's static
tests and the browser app use it)."""

from __future__ import annotations

from ..settings import MARROW_FAT_FRACTION_RANGE, PSOAS_FAT_FRACTION_RANGE, AnalysisOptions


def make_options(options: AnalysisOptions | dict | None) -> AnalysisOptions:
    """:class:`settings.AnalysisOptions` from None (defaults), a dict of its fields (``as_dict``), or itself."""
    if options is None:
        return AnalysisOptions()
    if isinstance(options, dict):
        return AnalysisOptions.from_dict(options)
    return options


def composition_ranges_percent() -> dict[str, tuple[float, float]]:
    """``calibration_params`` key -> the range (percent) a panel accepts for it (:mod:`..settings`)."""

    return {key: (100.0 * low, 100.0 * high) for key, (low, high) in (
        ("psoas_fat_fraction", PSOAS_FAT_FRACTION_RANGE), ("marrow_fat_fraction", MARROW_FAT_FRACTION_RANGE))}


def composition_params(psoas_fat_percent: float | None, marrow_fat_percent: float | None) -> dict[str, float]:
    """``calibration_params`` from the panel's composition fields (percent; outside the accepted range,
    :func:`composition_ranges_percent`: "typical for the age", nothing set)."""
    params: dict[str, float] = {}
    given = {"psoas_fat_fraction": psoas_fat_percent, "marrow_fat_fraction": marrow_fat_percent}
    for key, (low, high) in composition_ranges_percent().items():
        if given[key] is not None and low <= given[key] <= high:
            params[key] = round(given[key] / 100.0, 4)
    return params
