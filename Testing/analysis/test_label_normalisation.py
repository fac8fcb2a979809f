"""One function decides whether a label map is TotalSegmentator's ``total`` ids or ours
(:func:`OpportunisticBMDLib.labels.normalise_label_ids`); the CLI's pipeline and the browser app's case
loader call it (the Slicer Logic's call is covered by Testing/mrml/test_mrml_logic.py on the real TotalSegmentator
map)."""

from __future__ import annotations

import numpy as np

from OpportunisticBMDLib.io import write_volume
from OpportunisticBMDLib.labels import LABELS, TOTALSEG_TOTAL_IDS, normalise_label_ids
from OpportunisticBMDLib.pipeline import MODEL_LABELS_SOURCE, prepare_labels
from OpportunisticBMDLib.volume import Volume

TS_ID = {name: ts_id for ts_id, name in TOTALSEG_TOTAL_IDS.items()}


def _totalseg_map() -> np.ndarray:
    array = np.zeros((4, 5, 6), dtype=np.int16)
    array[0] = TS_ID["vertebrae_L1"]
    array[1] = TS_ID["vertebrae_L2"]
    array[2, :2] = TS_ID["iliopsoas_left"]
    array[3, :1] = 200  # an id of no schema
    return array


def test_totalsegmentator_ids_are_mapped():
    mapped, was_mapped = normalise_label_ids(_totalseg_map())
    assert was_mapped
    assert mapped[0, 0, 0] == LABELS["vertebra_L1"] and mapped[1, 0, 0] == LABELS["vertebra_L2"]
    assert mapped[2, 0, 0] == LABELS["psoas_left"] and mapped[3, 0, 0] == 0


def test_our_ids_and_the_models_map_are_kept_as_they_are():
    ours = np.zeros((3, 3, 3), dtype=np.int16)
    ours[0] = LABELS["vertebra_L1"]
    ours[1] = LABELS["psoas_left"]
    same, was_mapped = normalise_label_ids(ours)
    assert same is ours and not was_mapped
    # a model map with both psoas but no named vertebra (ids 30-31) looks like TotalSegmentator's L1-L2...
    model = np.zeros((3, 3, 3), dtype=np.int16)
    model[0], model[1] = LABELS["psoas_left"], LABELS["psoas_right"]
    assert normalise_label_ids(model)[1]  # ...and is guessed so when its origin is unknown
    kept, was_mapped = normalise_label_ids(model, from_model=True)
    assert kept is model and not was_mapped


def test_cli_and_web_loaders_map_the_same_way(tmp_path):
    from OpportunisticBMDLib.web.cases import load_ct_case

    ct_array = np.full((4, 5, 6), 40.0, dtype=np.float32)
    ct_array[:, 0] = -1000.0  # air: a CT in HU, not an 8-bit picture
    ct = Volume(ct_array, (10.0, 1.0, 1.0), (0.0, 0.0, 0.0))  # 40 mm head-to-foot: read_ct accepts it
    labels = ct.like(_totalseg_map())
    expected, _ = normalise_label_ids(labels.array)
    prepared = prepare_labels(labels, ct)  # what obmd analyze measures
    assert np.array_equal(prepared.array, expected) and prepared.metadata["source_schema"] == "totalsegmentator-total"
    model = ct.like(np.where(_totalseg_map() == TS_ID["iliopsoas_left"], LABELS["psoas_left"], 0).astype(np.int16))
    model.metadata["source_schema"] = MODEL_LABELS_SOURCE
    assert np.array_equal(prepare_labels(model, ct).array, model.array)  # the model's map is never guessed at
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(labels, tmp_path / "seg.nii.gz")
    _ct, web_labels, _name = load_ct_case(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz")
    assert np.array_equal(web_labels.array, expected)
