"""Issue 16, PACS round trip with a real server: Orthanc with its DICOMweb plugin on 127.0.0.1 (free ports,
storage in tmp) holds a study made from the shared DICOM series (with UIDs: the shared copy is anonymised)
plus a one-image localizer series; ``obmd analyze dicomweb://.../studies/<uid> --store`` picks the CT series
(printed, and in results.json), analyses it and stores SEG, SR and the PDF back in the same study."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from web_harness import free_port, stop_process

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.dicom import dicomweb, sources

DICOM_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen"
SERIES, LABELS = DICOM_DIR / "series", DICOM_DIR / "ct_seg_total.nii.gz"
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
DICOMWEB_PLUGIN = next((p for p in (Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
                                    Path("/usr/lib/orthanc/plugins/libOrthancDicomWeb.so")) if p.exists()), None)
STARTUP_S = 30.0

pytestmark = pytest.mark.skipif(
    ORTHANC is None or DICOMWEB_PLUGIN is None,
    reason="Orthanc or its DICOMweb plugin not installed (Debian: orthanc orthanc-dicomweb)")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> str:
    """A running Orthanc; yields its base URL (REST), stopped at the end."""
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {"Name": "obmd-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "DicomPort": free_port(), "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if requests.get(f"{url}/dicom-web/studies", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def study(orthanc, tmp_path_factory) -> tuple[str, str]:
    """(study UID, CT series UID) uploaded through Orthanc's REST API: the series with its completed UIDs
    (deterministic) and a localizer series of one image the series rule must skip."""
    folder = tmp_path_factory.mktemp("upload")
    source = sources.read_source_series(SERIES, with_pixels=True)
    paths = sources.write_series_with_uids(source, folder / "ct")
    scout = pydicom.dcmread(paths[0])
    scout.SeriesInstanceUID, scout.SOPInstanceUID = generate_uid(), generate_uid()
    scout.file_meta.MediaStorageSOPInstanceUID = scout.SOPInstanceUID
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SeriesDescription, scout.SeriesNumber = "Topogram", 1
    scout.save_as(folder / "scout.dcm", enforce_file_format=True)
    for path in [*paths, folder / "scout.dcm"]:
        requests.post(f"{orthanc}/instances", data=path.read_bytes(), timeout=30).raise_for_status()
    return source.study_uid, source.series_uid


def _series_in_study(orthanc: str, study_uid: str) -> dict[str, str]:
    """Modality per series UID, from a QIDO-RS query of the server."""
    answer = requests.get(f"{orthanc}/dicom-web/studies/{study_uid}/series", timeout=30)
    answer.raise_for_status()
    return {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in answer.json()}


def test_round_trip(orthanc, study, tmp_path, capsys):
    study_uid, ct_series_uid = study
    out = tmp_path / "out"
    address = f"dicomweb://{orthanc.removeprefix('http://')}/dicom-web/studies/{study_uid}"
    # the shared series is not measurable (both levels cut by the field of view): exit 3, outputs all the same
    assert main(["analyze", address, "--seg", str(LABELS), "--out", str(out), "--store", "--quiet"]) == 3
    printed = capsys.readouterr().out
    assert "series: axial soft-tissue series 'CT Body 3.0'" in printed and "stored " in printed
    results = json.loads((out / "results.json").read_text())
    assert results["input"]["ct"] == f"{orthanc}/dicom-web/studies/{study_uid}"
    choice = results["input"]["series_choice"]
    assert choice["series_instance_uid"] == ct_series_uid and choice["n_images"] == 20
    assert [s["description"] for s in choice["skipped"]] == ["Topogram"]
    assert results["dicom"]["study_instance_uid"] == study_uid and results["dicom"]["uids_generated"] is False

    series = _series_in_study(orthanc, study_uid)
    written = results["dicom"]["objects"]
    assert series[written["seg.dcm"]["series_instance_uid"]] == "SEG"
    assert series[written["sr.dcm"]["series_instance_uid"]] == "SR"
    assert series[ct_series_uid] == "CT"
    assert series[written["report_pdf.dcm"]["series_instance_uid"]] == "DOC"
    # what the server holds is what we wrote: the SEG's one instance
    sop = written["seg.dcm"]["sop_instance_uid"]
    instances = requests.get(f"{orthanc}/dicom-web/studies/{study_uid}/series/"
                             f"{written['seg.dcm']['series_instance_uid']}/instances", timeout=30).json()
    assert [i["00080018"]["Value"][0] for i in instances] == [sop]


def test_unknown_study_is_one_line(orthanc, tmp_path, capsys):
    address = f"dicomweb://{orthanc.removeprefix('http://')}/dicom-web/studies/1.2.3.4.5"
    assert main(["analyze", address, "--seg", str(LABELS), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "study 1.2.3.4.5 not found" in err and "Traceback" not in err


def test_a_pacs_url_without_the_dicomweb_root_says_to_check_it(orthanc, tmp_path, capsys):
    """http://HOST:PORT/ (Orthanc's REST root, not /dicom-web): the server answers, the study is not found there."""
    assert main(["analyze", "--pacs", f"{orthanc}/", "--study", "1.2.3.4.5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"study 1.2.3.4.5 not found on {orthanc}: the server answered" in err, err
    assert "DICOMweb root path (e.g. http://HOST:8042/dicom-web)" in err and "Traceback" not in err


def test_study_without_ct_series_and_refused_store(orthanc, tmp_path, capsys):
    """A study holding only a localizer: one line naming the rule; a STOW the server refuses: one line."""
    scout = pydicom.dcmread(next(p for p in SERIES.iterdir()))
    scout.StudyInstanceUID, scout.SeriesInstanceUID = generate_uid(), generate_uid()
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # not the study's slice
    scout.SOPClassUID = scout.file_meta.MediaStorageSOPClassUID
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.save_as(tmp_path / "scout.dcm", enforce_file_format=True)
    requests.post(f"{orthanc}/instances", data=(tmp_path / "scout.dcm").read_bytes(), timeout=30).raise_for_status()
    address = f"dicomweb://{orthanc.removeprefix('http://')}/dicom-web/studies/{scout.StudyInstanceUID}"
    assert main(["analyze", address, "--seg", str(LABELS), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no axial CT image series" in err and "Traceback" not in err
    with pytest.raises(dicomweb.PacsError, match="refused to store"):
        dicomweb.store(f"{orthanc}/no-such-dicom-web", [tmp_path / "scout.dcm"])
