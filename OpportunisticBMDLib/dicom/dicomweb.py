"""A study on a DICOMweb server (a PACS, Orthanc): find its CT series with the project's one rule
(dicom_series.choose_ct_series, on the QIDO/WADO metadata), retrieve that series into a folder, and store
our SEG, SR and PDF back (STOW-RS). Every failure a user can act on is one line (errors.InputError)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from .. import dicom_series
from ..errors import InputError, OBMDError

SCHEME = "dicomweb://"
URL_PATTERN = re.compile(r"^dicomweb://(?P<base>[^/]+(?:/.*?)?)/studies/(?P<study>[0-9.]+)/?$")
TIMEOUT_S = 60.0  # per request: design choice, a series of a few hundred slices on a LAN
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


class PacsError(OBMDError):
    """The DICOMweb server cannot be reached, has no such study, or refused to store."""


@dataclass(frozen=True)
class StudyAddress:
    url: str  # the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web
    study_uid: str

    def __str__(self) -> str:
        return f"{self.url}/studies/{self.study_uid}"


def is_dicomweb(text: str | None) -> bool:
    return bool(text) and str(text).startswith(SCHEME)


def parse_address(text: str) -> StudyAddress:
    """``dicomweb://HOST:PORT/PATH/studies/<StudyUID>`` -> (``http://HOST:PORT/PATH``, study UID)."""
    match = URL_PATTERN.match(text.strip())
    if not match:
        raise InputError(f"{text}: not a DICOMweb study address; use dicomweb://HOST:PORT/PATH/studies/<StudyUID>")
    return StudyAddress("http://" + match["base"].rstrip("/"), match["study"])


def address(pacs_url: str, study_uid: str) -> StudyAddress:
    """``--pacs URL --study UID`` (URL: http(s)://HOST:PORT/PATH or dicomweb://HOST:PORT/PATH)."""
    url = pacs_url.strip().rstrip("/")
    if url.startswith(SCHEME):
        url = "http://" + url[len(SCHEME):]
    if not re.match(r"^https?://[^/]+", url):
        raise InputError(f"--pacs {pacs_url}: a DICOMweb root such as http://HOST:PORT/dicom-web")
    if not re.fullmatch(r"[0-9.]+", study_uid.strip()):
        raise InputError(f"--study {study_uid}: not a Study Instance UID (digits and dots)")
    return StudyAddress(url, study_uid.strip())


def client(url: str):
    """A dicomweb-client session (imported here: a local analysis never needs it)."""
    try:
        from dicomweb_client import DICOMwebClient
    except ImportError as exc:
        raise InputError("PACS access needs dicomweb-client: pip install 'OpportunisticBMD[pacs]'") from exc
    return DICOMwebClient(url, timeout=TIMEOUT_S)


def not_found(where: StudyAddress) -> str:
    """A study the server does not know: most often a URL without the DICOMweb root (Orthanc answers 404 on
    http://HOST:8042/studies/... but serves http://HOST:8042/dicom-web/studies/...)."""
    return (f"study {where.study_uid} not found on {where.url}: the server answered, so check the study UID and "
            "that the URL includes the DICOMweb root path (e.g. http://HOST:8042/dicom-web)")


def connection_reason(exc: Exception) -> str:
    """Why a connection failed, in the words of the operating system ('Connection refused', 'Name or service
    not known'), without urllib3's object names; the exception's class name when none is given."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    match = re.search(r"(Failed to [^'\")]+|timed out|Connection (?:refused|reset)[^'\")]*)", text)
    return match.group(1).strip() if match else type(exc).__name__


def _call(what: str, where: StudyAddress | str, fn, *args, **kwargs):
    """Run a dicomweb-client call; connection and HTTP failures become one clear line."""
    import requests  # dicomweb-client's transport

    try:
        return fn(*args, **kwargs)
    except requests.exceptions.ConnectionError as exc:
        raise PacsError(f"cannot connect to {getattr(where, 'url', where)}: {connection_reason(exc)} "
                        f"({what})") from exc
    except requests.exceptions.Timeout as exc:
        raise PacsError(f"DICOMweb server {getattr(where, 'url', where)} did not answer in {TIMEOUT_S:.0f} s "
                        f"({what})") from exc
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if what.startswith("STOW"):
            raise PacsError(f"DICOMweb server {getattr(where, 'url', where)} refused to store our objects "
                            f"(HTTP {status})") from exc
        if status == 404 and isinstance(where, StudyAddress):
            raise PacsError(not_found(where)) from exc
        raise PacsError(f"DICOMweb server {getattr(where, 'url', where)} answered HTTP {status} ({what})") from exc


def _no_bulk_data(tag: str, vr: str, uri: str) -> bytes:
    """Headers only: bulk data (pixels, private blobs) is never fetched for the series choice."""
    return b""


def study_series(where: StudyAddress) -> list[dicom_series.SeriesInfo]:
    """The study's series, from its instances' metadata (WADO-RS metadata, as pydicom headers)."""
    metadata = _call("study metadata", where, client(where.url).retrieve_study_metadata, where.study_uid)
    if not metadata:
        raise PacsError(not_found(where))
    items = []
    for entry in metadata:
        ds = Dataset.from_json(entry, bulk_data_uri_handler=_no_bulk_data)
        items.append((ds, str(ds.get("SOPInstanceUID", ""))))
    return dicom_series.series_from_datasets(items)


def fetch_ct_series(where: StudyAddress, folder: str | os.PathLike[str]) -> dicom_series.SeriesChoice:
    """Choose the study's CT series and retrieve it into ``folder`` (one file per instance)."""
    choice = dicom_series.choose_ct_series(study_series(where))
    if choice.chosen is None:
        raise PacsError(f"study {where.study_uid} on {where.url}: {choice.reason}")
    # any transfer syntax: a server may store JPEG 2000 it cannot transcode (Debian's Orthanc), and the
    # reader decodes it
    datasets = _call("retrieve series", where, client(where.url).retrieve_series, where.study_uid,
                     choice.chosen.series_uid, media_types=ANY_TRANSFER_SYNTAX)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for number, ds in enumerate(datasets):
        ds.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)
    return choice


def store(url: str, paths: list[Path]) -> list[str]:
    """STOW-RS ``paths`` to ``url``; the SOP Instance UIDs stored. Raises PacsError when refused."""
    datasets = [pydicom.dcmread(p) for p in paths]
    response = _call("STOW-RS store", url, client(url).store_instances, datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise PacsError(f"DICOMweb server {url} refused to store {len(failed)} of {len(datasets)} objects "
                        f"(failure reason {', '.join(reasons)})")
    return [str(ds.SOPInstanceUID) for ds in datasets]
