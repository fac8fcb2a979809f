"""`obmd demo` (the README's first command) end to end: a digital patient is generated, segmented by the
shipped model, analysed and compared with its own truth, spine and hips, with the pictures written."""

from __future__ import annotations

import re

import pytest

from OpportunisticBMDLib.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "obmd-demo"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(["demo", "--out", str(out)])
    return rc, buffer.getvalue(), out


def test_demo_runs_and_matches_its_truth(demo):
    rc, text, out = demo
    assert rc == 0
    measured = re.search(r"summary \(L1\+L2\): ([\d.]+) \+-([\d.]+) mg/cm3", text)
    truth = re.search(r"truth   \(L1\+L2\): ([\d.]+) mg/cm3", text)
    assert measured and truth, text[-2000:]
    vbmd, sd, true = float(measured.group(1)), float(measured.group(2)), float(truth.group(1))
    assert 2.0 < sd < 10.0  # muscle-fat's stated 1 SD (psoas composition)
    assert abs(vbmd - true) < 10.0  # digital cohort limits of agreement are wider; this patient: +3
    hips = re.findall(r"^(left|right) (neck|total hip)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)%", text, re.M)
    assert len(hips) == 4, text[-2000:]
    for side, region, m, t, err in hips:
        # the error column agrees with the printed (rounded) values
        assert abs(float(m) / float(t) - 1.0) * 100.0 == pytest.approx(abs(float(err)), abs=0.3)
        # model labels + phantomless calibration: a few % (docs/hip-method.md); guards gross regressions
        assert abs(float(err)) < 10.0, (side, region)
    for name in ("results/results.json", "results/hip_left.png", "results/hip_right.png", "calibration_line.png",
                 "results/report.pdf"):
        assert (out / name).stat().st_size > 1000, name
    # the report names the model that segmented, with its version from the manifest
    import json
    import shutil
    import subprocess

    if shutil.which("pdftotext"):
        text = " ".join(subprocess.run(["pdftotext", str(out / "results" / "report.pdf"), "-"], capture_output=True,
                                       text=True, check=True).stdout.split())
        model = json.loads((out / "results" / "results.json").read_text())["software"]["models"]["model"]
        assert f"segmentation: model {model['name']} {model['version']}" in text
