"""The shipped model on a small unseen digital patient: labels land in the right places, levels named."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib.labels import LABELS, VERTEBRA_LEVELS
from OpportunisticBMDLib.models import keypoints as kp
from OpportunisticBMDLib.models.inference import segment

UNSEEN_SEED = 1001  # training used phantom seeds 5000-5009


@pytest.fixture(scope="module")
def phantom_and_prediction():
    from OpportunisticBMDLib.phantom.generator import generate_phantom
    from OpportunisticBMDLib.phantom.options import PhantomOptions

    phantom = generate_phantom(UNSEEN_SEED, PhantomOptions(region="torso", spacing_mm=(2.5, 2.0, 2.0)))
    labels, keypoints = segment(phantom.ct)
    return phantom, labels, keypoints


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_labels_on_the_ct_grid_in_the_right_places(phantom_and_prediction):
    phantom, labels, _ = phantom_and_prediction
    truth, pred = phantom.labels.array, labels.array
    assert pred.shape == truth.shape
    vert_ids = [LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS]
    assert _dice(np.isin(pred, vert_ids), np.isin(truth, vert_ids)) > 0.6
    for side in ("left", "right"):
        for structure in ("femur", "psoas"):
            name = f"{structure}_{side}"
            assert _dice(pred == LABELS[name], truth == LABELS[name]) > 0.5, name
    # left is larger i (patient right -> left)
    i_left = np.argwhere(pred == LABELS["femur_left"])[:, 2].mean()
    i_right = np.argwhere(pred == LABELS["femur_right"])[:, 2].mean()
    assert i_left > i_right


def test_levels_named_and_keypoints_near_body_centres(phantom_and_prediction):
    phantom, labels, keypoints = phantom_and_prediction
    truth = phantom.labels.array
    named = {lvl for lvl in VERTEBRA_LEVELS if (labels.array == LABELS[f"vertebra_{lvl}"]).any()}
    assert {"T12", "L1", "L2"} <= named
    for lvl in ("L1", "L2"):
        pred_mask = labels.array == LABELS[f"vertebra_{lvl}"]
        assert _dice(pred_mask, truth == LABELS[f"vertebra_{lvl}"]) > 0.5, lvl
        centre = kp.body_centre_kji(truth == LABELS[f"vertebra_{lvl}"])
        ref_mm = phantom.ct.index_to_lps_mm(centre)
        assert np.linalg.norm(ref_mm - np.asarray(keypoints["levels"][lvl]["position_lps_mm"])) < 15.0
