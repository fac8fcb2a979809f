"""Model-made labels get a 2.5 mm larger cortex margin; given labels keep the study's 3.2 mm erosion."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib import pipeline
from OpportunisticBMDLib.io import read_ct, read_labels


def test_margin_depends_on_where_the_labels_came_from(shared_data):
    ct = read_ct(shared_data / "ct.nii.gz")
    given = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct)
    model_made = given.like(given.array.copy(), source="model")
    options = pipeline.AnalysisOptions()
    assert pipeline.erosion_mm(options, given) == pytest.approx(options.erosion_radius_mm)
    assert pipeline.erosion_mm(options, model_made) == pytest.approx(options.erosion_radius_mm + 2.5)
    assert pipeline.erosion_mm(pipeline.AnalysisOptions(label_margin_mm=0.0), model_made) == pytest.approx(3.2)

    rois_given = pipeline.derive_rois(ct, given, options)
    rois_model = pipeline.derive_rois(ct, model_made, options)
    for level in ("L1", "L2", "L3"):
        key = f"trabecular_{level}"
        assert rois_model[key].sum() < 0.9 * rois_given[key].sum()  # a thicker shell is removed
        assert not (rois_model[key] & ~rois_given[key]).any()  # and nothing is added
    result = pipeline.measure(ct, rois_model, options, model_made)
    assert result.results["options"]["label_margin_mm"] == pytest.approx(2.5)
    assert result.results["spine"]["levels"]["L1"]["erosion_radius_mm"] == pytest.approx(5.7)
    assert np.isfinite(result.results["spine"]["summary"]["vbmd_mg_cm3"])
