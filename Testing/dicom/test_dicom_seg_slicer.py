"""Issue 16: our DICOM SEG becomes a Slicer segmentation with every ROI where its NIfTI mask is.

slicer-core has no DICOM module (Slicer's DICOM SEG plugin lives in the desktop application), so this test
does what that plugin does with highdicom: each segment's frames become a labelmap node on the SEG's own
geometry (plane positions, orientation, spacing), imported into a vtkMRMLSegmentationNode through Slicer's
segmentations logic; each segment is then exported onto the NIfTI mask's grid by Slicer and must equal it
voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("slicer")

from mrml_helpers import assert_segments_equal_masks, load_seg_as_segmentation  # noqa: E402

from OpportunisticBMDLib.cli import main  # noqa: E402
from OpportunisticBMDLib.mrml import scene as mrml_scene  # noqa: E402

DICOM_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen"

pytestmark = pytest.mark.mrml


def test_seg_loads_into_slicer_where_the_masks_are(tmp_path):
    out = tmp_path / "out"
    assert main(["analyze", str(DICOM_DIR / "series"), "--seg", str(DICOM_DIR / "ct_seg_total.nii.gz"),
                 "--out", str(out), "--quiet"]) == 3
    scene, _app, _logics = mrml_scene.create_headless_scene()
    seg_node, names = load_seg_as_segmentation(out / "dicom" / "seg.dcm", scene)
    assert seg_node.GetSegmentation().GetNumberOfSegments() == len(names) >= 6
    assert_segments_equal_masks(seg_node, names, out / "masks", scene)
