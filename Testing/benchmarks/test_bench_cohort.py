"""``obmd bench cohort``: the model-vs-truth-label cohort benchmark on one unseen digital patient."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from OpportunisticBMDLib.benchmarks import cohort
from OpportunisticBMDLib.errors import InputError


@pytest.fixture(scope="module")
def one_patient(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "cohort.json"
    proc = subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", "bench", "cohort", "--n", "1",
                           "--seed", "1001", "--threads", "1", "--json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(path.read_text()), proc.stdout


def test_output_keys_and_report(one_patient):
    figures, stdout = one_patient
    for key in ("levels", "l1_l2", "truth_floor_l1_l2", "failures", "cases", "target", "naming_all_levels_correct",
                "dice_vertebrae_any_level_mean", "n_requested", "n_failed", "seconds_per_patient", "threads"):
        assert key in figures, key
    assert figures["n_requested"] == 1 and figures["threads"] == 1
    assert figures["target"]["met"] is False  # N = 1 can never meet an N >= 50 target
    (case,) = figures["cases"]
    assert case["seed"] == 1001
    for lvl in ("T12", "L1", "L2", "L3"):
        entry = figures["levels"][lvl]
        assert 0.0 <= entry["dice_mean"] <= 1.0
        assert entry["naming_accuracy"] in (0.0, 1.0)  # one patient: right or wrong
        assert entry["measured_on_truth_labels"] == 1
    assert "L1-L2 model vs truth labels" in stdout and "failures:" in stdout and "target" in stdout


def test_truth_labels_measure_the_phantom_truth(one_patient):
    """On the phantom's own labels, the patient's exact HU->mg/cm3 line gives back its true vBMD:
    what is left is the ROI measurement (noise, blur, partial volume at 2.5 x 2 x 2 mm)."""
    figures, _ = one_patient
    (case,) = figures["cases"]
    levels = case["levels"]
    for lvl in ("T12", "L1", "L2", "L3", "L4"):
        v = levels[lvl]
        assert v["truth_label_exact_mg_cm3"] == pytest.approx(v["truth_mg_cm3"], abs=10.0), lvl
    assert case["l1_l2_truth_mg_cm3"] == pytest.approx(np.mean([levels[lvl]["truth_mg_cm3"] for lvl in ("L1", "L2")]))
    if "l1_l2_truth_label_exact_mg_cm3" in case:
        assert case["l1_l2_truth_label_exact_mg_cm3"] == pytest.approx(case["l1_l2_truth_mg_cm3"], abs=6.0)
    # the difference figures are differences of the per-case values (one patient: bias = the difference)
    agreement = figures["levels"]["L2"]["truth_label_vs_truth"]
    assert agreement["n"] == 1
    assert agreement["bias_mg_cm3"] == pytest.approx(levels["L2"]["truth_label_mg_cm3"] - levels["L2"]["truth_mg_cm3"],
                                                     abs=1e-3)


def test_training_seeds_are_refused():
    with pytest.raises(InputError, match="training phantoms"):
        cohort.check_seeds(4990, 20)  # 4990-5009 reaches into 5000+
    cohort.check_seeds(1000, 50)


def test_summary_of_known_rows():
    """Bias and limits of agreement from hand-made rows: differences +2 and +3 -> bias 2.5, SD sqrt(0.5)."""
    def row(seed, model, truth_label):
        return {"seed": seed, "dice": {"vertebra_L1": 0.5}, "naming": {"L1": {"correct": True}},
                "keypoint_distance_mm": {"L1": 3.0}, "levels_named_correctly": True, "naming_method": "sacrum",
                "qc": [], "levels": {"L1": {"truth_mg_cm3": 100.0, "truth_label_mg_cm3": truth_label,
                                            "model_label_mg_cm3": model, "truth_label_exact_mg_cm3": truth_label,
                                            "model_label_exact_mg_cm3": model}},
                "l1_l2_model_label_mg_cm3": model, "l1_l2_truth_label_mg_cm3": truth_label,
                "l1_l2_model_label_exact_mg_cm3": model, "l1_l2_truth_label_exact_mg_cm3": truth_label,
                "l1_l2_truth_mg_cm3": 100.0}

    figures = cohort.summarise([row(1, 102.0, 100.0), row(2, 104.0, 101.0)], [], 2)
    a = figures["l1_l2"]["model_vs_truth_label"]
    assert a["bias_mg_cm3"] == pytest.approx(2.5)
    assert a["loa_low_mg_cm3"] == pytest.approx(2.5 - 1.96 * np.sqrt(0.5), abs=1e-3)
    assert a["loa_high_mg_cm3"] == pytest.approx(2.5 + 1.96 * np.sqrt(0.5), abs=1e-3)
    assert figures["levels"]["L1"]["naming_accuracy"] == 1.0
    assert figures["target"]["met"] is False  # the limits are within +-5, but N < 50
