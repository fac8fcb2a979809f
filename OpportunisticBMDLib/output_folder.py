"""The analysis output folder (``obmd analyze --out DIR``, ``obmd demo``, Save report): checked before any
input is read, written whole or not at all, never next to an input, never mixing two runs.

A run writes into ``DIR.obmd-tmp-<pid>`` beside ``DIR`` (same filesystem, so the final move is a rename),
holding the lock file ``DIR.obmd-lock`` (its pid) against a second run into the same folder. At the end a
previous OBMD result in ``DIR`` is moved aside, the new folder renamed into place and the old one deleted;
on an error or Ctrl-C the temporary folder is deleted and ``DIR`` is left as it was. ``DIR`` is ours to
replace only when it is empty or holds nothing but what an OBMD run wrote (the list in its marker file
``.obmd-output``; before the marker existed: the analysis file names only), so nothing a user made is
ever deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import json
import os
import re
import shutil
import socket
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError

MARKER_NAME = ".obmd-output"  # JSON: software, version, created, files (relative paths written)
LOCK_SUFFIX = ".obmd-lock"
TEMP_INFIX = ".obmd-tmp-"
ASIDE_INFIX = ".obmd-old-"
# What `obmd analyze` wrote before the marker existed: such a folder is still recognised as ours.
_LEGACY_FILE = re.compile(r"^(results\.json|results\.csv|labels\.nii\.gz|labels\.json|keypoints\.json|"
                          r"keypoints\.mrk\.json|hip_(left|right)\.png|masks/[A-Za-z0-9_]+\.nii\.gz|masks)$")
# A lock without a pid yet (its writer between create and write) counts as held for this long.
_FRESH_LOCK_S = 30.0


def _label(target: Path) -> str:
    return f"--out {target}"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _relative_entries(folder: Path) -> set[str]:
    """Every file and folder under ``folder`` as a POSIX path relative to it."""
    entries = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        entries.update((rel / name).as_posix() for name in [*dirs, *files])
    return entries


def _listed_files(folder: Path) -> set[str] | None:
    """The files the marker says an OBMD run wrote (None: no readable marker)."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
        return {str(name) for name in marker["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def foreign_entries(folder: Path) -> list[str]:
    """What in an existing folder an OBMD run did not write (empty: the folder is ours to replace)."""
    entries = _relative_entries(folder)
    listed = _listed_files(folder)
    if listed is None:  # no marker: an older `obmd analyze` folder has results.json and known names only
        if "results.json" not in entries:
            return sorted(entries)
        return sorted(e for e in entries if not _LEGACY_FILE.match(e))
    allowed = {MARKER_NAME} | listed
    allowed |= {parent.as_posix() for name in listed for parent in Path(name).parents if parent != Path(".")}
    return sorted(entries - allowed)


def _check_inputs(resolved: Path, target: Path, inputs: Iterable[str | Path | None]) -> None:
    """DIR is replaced whole: it must hold no input (at any depth) and lie inside no input folder."""
    suggestion = resolved.parent / f"{resolved.name}-obmd"
    for given in inputs:
        if given is None or str(given) == "":
            continue
        source = Path(given).expanduser().resolve()
        folder = source if source.is_dir() else source.parent  # a DICOM series is a folder
        if folder == resolved or folder.is_relative_to(resolved):
            where = "holds the input"
        elif source.is_dir() and resolved.is_relative_to(source):
            where = "is inside the input folder"
        else:
            continue
        raise InputError(f"{_label(target)} {where} {given}: results are never written next to or inside the "
                         f"inputs; choose another folder (e.g. {suggestion})")


def _writable(folder: Path) -> bool:
    """Writable, and not marked read-only: on POSIX a folder without any write bit is refused even for root
    (who may write anywhere; a data folder made read-only should stay so)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    return os.name != "posix" or bool(stat.S_IMODE(folder.stat().st_mode) & 0o222)


def check_output_target(target: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an output folder that cannot take an analysis, before anything is read or written:
    a file, under a file, not writable, holding an input (at any depth, or inside a DICOM series
    folder given as input), or a non-empty folder that is not an OBMD output. Returns it resolved."""
    target = Path(target).expanduser()
    resolved = target.resolve()
    if resolved.parent == resolved:
        raise InputError(f"{_label(target)}: a filesystem root cannot be an output folder; choose a new folder")
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"{_label(target)} is a file, not a folder: choose a new folder name")
    _check_inputs(resolved, target, inputs)
    existing = _nearest_existing(resolved.parent)
    if not existing.is_dir():
        raise InputError(f"{_label(target)}: {existing} is a file, not a folder")
    # the results are built beside DIR and renamed into place: DIR's parent (or what will create it) must be
    # writable; an existing DIR too, to empty it
    for folder in (existing, *((resolved,) if resolved.exists() else ())):
        if not _writable(folder):
            raise InputError(f"{_label(target)}: {folder} is not writable; choose a folder you can write to")
    if resolved.exists():
        foreign = foreign_entries(resolved)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputError(f"{_label(target)} is not an OpportunisticBMD output folder (it holds {shown}): "
                             "choose an empty or new folder")
    return resolved


# ----------------------------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _lock_owner(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; pid None while its writer has not written it yet."""
    try:
        text = lock.read_text().split()
    except OSError:
        return None, ""
    if not text or not text[0].isdigit():
        return None, ""
    return int(text[0]), (text[1] if len(text) > 1 else "")


def _is_stale(lock: Path) -> bool:
    pid, host = _lock_owner(lock)
    if pid is None:
        try:
            age_s = _dt.datetime.now().timestamp() - lock.stat().st_mtime
        except OSError:
            return False
        return age_s > _FRESH_LOCK_S
    if host and host != socket.gethostname():  # another machine's process cannot be checked from here
        return False
    return not _pid_alive(pid)


def _recover_after(resolved: Path, pid: int | None) -> None:
    """What a killed run (pid) left: its old result moved aside and not yet replaced goes back; its
    temporary folder is deleted."""
    if pid is None:
        return
    aside = resolved.parent / f"{resolved.name}{ASIDE_INFIX}{pid}"
    if aside.is_dir() and not resolved.exists():
        os.replace(aside, resolved)
    elif aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(resolved.parent / f"{resolved.name}{TEMP_INFIX}{pid}", ignore_errors=True)


def acquire_lock(resolved: Path, target: Path) -> Path:
    """Create ``DIR.obmd-lock`` (O_EXCL) holding this pid; take over a lock whose process has ended."""
    lock = resolved.parent / f"{resolved.name}{LOCK_SUFFIX}"
    for _attempt in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _is_stale(lock):
                pid, host = _lock_owner(lock)
                owner = (f"pid {pid}" if pid else "starting") + (
                    f" on {host}" if host and host != socket.gethostname() else "")
                raise InputError(f"{_label(target)} is being written by another obmd run ({owner}); wait for it "
                                 f"or choose another folder (if no run is going on, delete {lock})") from None
            stale_pid, _host = _lock_owner(lock)
            claimed = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
            try:
                os.replace(lock, claimed)  # atomic: of two runs taking over, one gets it
            except FileNotFoundError:
                continue
            if _lock_owner(claimed)[0] != stale_pid:  # another run took it over first: its lock goes back
                os.replace(claimed, lock)
                continue
            claimed.unlink(missing_ok=True)
            _recover_after(resolved, stale_pid)
            continue
        except OSError as exc:
            raise InputError(f"{_label(target)}: cannot create {lock} ({exc.strerror}); "
                             "choose a folder you can write to") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return lock
    raise InputError(f"{_label(target)}: could not take the lock {lock}; try again")


# ------------------------------------------------------------------------------------- staged writing
def _write_marker(folder: Path) -> None:
    from . import __version__

    files = sorted(e for e in _relative_entries(folder) if (folder / e).is_file())
    marker = {"software": "OpportunisticBMD", "version": __version__,
              "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "files": files}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n")


def _move_into_place(staging: Path, resolved: Path, target: Path) -> None:
    foreign = foreign_entries(resolved) if resolved.exists() else []
    if foreign:  # something was added to DIR while the analysis ran
        raise InputError(f"{_label(target)} changed during the run (it now holds {', '.join(foreign[:3])}); "
                         f"the results are left in {staging}")
    aside = resolved.parent / f"{resolved.name}{ASIDE_INFIX}{os.getpid()}"
    if resolved.exists():
        os.replace(resolved, aside)  # a rename: a directory onto a name that does not exist
    try:
        os.replace(staging, resolved)
    except OSError:
        if aside.exists():
            os.replace(aside, resolved)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def new_report_folder(base_dir: str | Path, case_name: str) -> Path:
    """``base_dir/<case name>-<YYYYmmdd-HHMMSS>``: one folder per saved report (Slicer, web), so a report
    never replaces another case's."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in case_name) or "case"
    return Path(base_dir) / f"{safe}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def staged_output(target: str | Path, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Check ``target`` (:func:`check_output_target`), lock it and yield a fresh temporary folder beside
    it; on success the folder (with its marker) replaces ``target`` whole, on any error it is deleted."""
    target = Path(target).expanduser()
    resolved = check_output_target(target, inputs)
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{_label(target)}: cannot create {resolved.parent} ({exc.strerror})") from None
    lock = acquire_lock(resolved, target)
    staging = resolved.parent / f"{resolved.name}{TEMP_INFIX}{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)  # a leftover of an earlier run with this pid
        staging.mkdir()
        try:
            yield staging
            _write_marker(staging)
        except BaseException:  # errors and Ctrl-C alike: nothing half-written stays
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            _move_into_place(staging, resolved, target)
        except OSError as exc:
            raise InputError(f"{_label(target)}: could not move the results into place ({exc}); "
                             f"they are in {staging}") from None
    finally:
        lock.unlink(missing_ok=True)


__all__ = ["MARKER_NAME", "acquire_lock", "check_output_target", "foreign_entries", "new_report_folder",
           "staged_output"]
