"""The digital patient the Slicer module and the browser app load comes from a library function
(:func:`OpportunisticBMDLib.phantom.digital_patient`), not from running the CLI: it must be the patient
``obmd phantom`` writes for the same seed, with the header (kVp, age, sex) a scan of it would carry."""

from __future__ import annotations

import json

import numpy as np

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.phantom import digital_patient


def test_digital_patient_is_what_obmd_phantom_writes(tmp_path):
    phantom = digital_patient(4, region="spine", spacing_mm=3.0, write_to=tmp_path / "written")
    assert main(["phantom", "--region", "spine", "--seed", "4", "--spacing-mm", "3", "3", "3",
                 "--out", str(tmp_path / "cli")]) == 0
    cli_ct = read_ct(tmp_path / "cli" / "ct.nii.gz")
    cli_labels = read_labels(tmp_path / "cli" / "labels.nii.gz", like=cli_ct)
    assert np.array_equal(phantom.ct.array, cli_ct.array)
    assert np.array_equal(phantom.labels.array, cli_labels.array)
    assert np.allclose(phantom.ct.spacing_mm, cli_ct.spacing_mm) and np.allclose(phantom.ct.origin_lps_mm,
                                                                                  cli_ct.origin_lps_mm, atol=1e-3)
    for key in ("kvp", "patient_age", "patient_sex"):  # the sidecar obmd phantom writes, read as obmd analyze does
        assert str(phantom.ct.metadata[key]) == str(cli_ct.metadata[key]), key
    truth = json.loads((tmp_path / "cli" / "truth.json").read_text())
    assert phantom.truth["spine"]["levels"] == truth["spine"]["levels"]
    # write_to: the same files as obmd phantom --out
    assert np.array_equal(read_ct(tmp_path / "written" / "ct.nii.gz").array, cli_ct.array)
    assert (tmp_path / "written" / "ct.json").read_text() == (tmp_path / "cli" / "ct.json").read_text()


def test_web_case_is_the_library_patient():
    from OpportunisticBMDLib.web.cases import load_phantom_case

    ct, labels, name = load_phantom_case(5, "spine", 3.0)
    phantom = digital_patient(5, "spine", 3.0)
    assert name == "digital-patient-005"
    assert np.array_equal(ct.array, phantom.ct.array) and np.array_equal(labels.array, phantom.labels.array)
    assert ct.metadata["patient_age"] == phantom.ct.metadata["patient_age"]
