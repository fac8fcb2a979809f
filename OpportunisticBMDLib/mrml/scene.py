"""A headless MRML scene from ``slicer-core`` (no desktop Slicer), plus file IO for it.

Only used outside desktop Slicer (tests, the browser app). Inside Slicer the application's own
``slicer.mrmlScene`` and module logics are used and nothing here is called. The recipe follows
``../shared/notes/slicer-core-headless.md`` and trame-slicer's ``SlicerApp``: application logic with
a color logic holding the default color nodes, module logics given the application logic BEFORE the
scene, registered by name, and ``slicer.mrmlScene`` set so that ``slicer.util`` helpers work.
"""

from __future__ import annotations

import os
import tempfile
import types
from contextlib import suppress
from pathlib import Path
from typing import Any

import slicer
from vtkmodules.vtkCommonCore import vtkCollection

_KEEP_ALIVE: list[tuple[Any, Any, dict[str, Any]]] = []


def _terminologies_share_dir() -> Path | None:
    """Terminology JSON files shipped by trame-slicer (if installed); without them only logs errors."""
    try:
        import trame_slicer.resources as res  # optional: the [web] extra
    except ImportError:
        return None
    path = Path(res.__file__).parent / "terminologies"
    return path if path.is_dir() else None


def _register(app_logic: Any, scene: Any, name: str, logic: Any, share_dir: Path | None = None) -> Any:
    if share_dir is not None:
        with suppress(AttributeError):
            logic.SetModuleShareDirectory(share_dir.as_posix())
    logic.SetMRMLApplicationLogic(app_logic)  # before the scene: logics look it up on scene set
    logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic(name, logic)
    return logic


def install_module_shims(logics: dict[str, Any]) -> None:
    """``slicer.modules.<name>.logic()`` as desktop Slicer has it; some slicer.util helpers use it."""
    modules = getattr(slicer, "modules", None)
    if not isinstance(modules, types.SimpleNamespace):
        modules = types.SimpleNamespace()
        slicer.modules = modules
    for name, logic in logics.items():
        setattr(modules, name.lower(), types.SimpleNamespace(logic=lambda logic=logic: logic))


def create_headless_scene() -> tuple[Any, Any, dict[str, Any]]:
    """Create a scene with the module logics this package needs; returns ``(scene, app_logic, logics)``.

    ``logics`` maps "Colors", "Volumes", "Markups", "Segmentations", "SubjectHierarchy", "Tables",
    "Terminologies" to their logic objects; ``logics["_io"]`` holds the remote-IO logics used to read
    .mrb files. ``slicer.mrmlScene`` is set to the new scene.
    """
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()  # as qSlicerCoreApplication::setMRMLScene adds one
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    logics: dict[str, Any] = {"Colors": app_logic.GetColorLogic()}
    app_logic.SetModuleLogic("Colors", logics["Colors"])
    terminologies_dir = _terminologies_share_dir()
    if terminologies_dir is not None:
        logics["Terminologies"] = _register(
            app_logic, scene, "Terminologies", slicer.vtkSlicerTerminologiesModuleLogic(), terminologies_dir
        )
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Markups", slicer.vtkSlicerMarkupsLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ):
        logics[name] = _register(app_logic, scene, name, cls())

    # Reading .mrb needs the remote IO / data IO manager pair wired to the scene with a cache dir.
    cache_dir = tempfile.mkdtemp(prefix="obmd-mrml-cache-")
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.SetMRMLApplicationLogic(app_logic)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(cache_dir)
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(app_logic)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()
    logics["_io"] = {"remote_io": remote_io, "data_io": data_io, "cache_dir": cache_dir}

    slicer.mrmlScene = scene
    # VTK objects die with their last Python reference and logics only hold weak pointers to the
    # application logic and the IO manager: keep them alive as long as the process.
    _KEEP_ALIVE.append((scene, app_logic, logics))
    install_module_shims({k: v for k, v in logics.items() if not k.startswith("_")})
    return scene, app_logic, logics


# --- file IO through storage nodes (slicer.util.loadVolume needs slicer.app) ---------------------


def load_volume(path: str | os.PathLike[str], name: str | None = None, labelmap: bool = False) -> Any:
    """Read a .nii.gz/.nrrd/.mha volume into a scalar (or labelmap) volume node of ``slicer.mrmlScene``."""
    scene = slicer.mrmlScene
    path = Path(path)
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, name or path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(path.as_posix())
    if labelmap:
        storage.SetCenterImage(False)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"{path}: could not be read as a volume")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    if not labelmap:  # a JSON sidecar's header (dcm2niix, obmd phantom) travels as node attributes
        from ..io import read_sidecar
        from .volumes import set_header_attributes

        set_header_attributes(node, read_sidecar(path))
    return node


def save_node(node: Any, path: str | os.PathLike[str]) -> Path:
    """Write a volume, segmentation (.seg.nrrd), markups (.mrk.json) or table (.csv/.tsv) node."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = node.GetStorageNode()
    if storage is None:
        storage = node.CreateDefaultStorageNode()
        node.GetScene().AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(path.as_posix())
    if not storage.WriteData(node):
        raise OSError(f"{path}: writing {node.GetName()} failed")
    return path


def load_segmentation(path: str | os.PathLike[str], name: str | None = None) -> Any:
    """Read a .seg.nrrd (or label map file) as a segmentation node."""
    logic = slicer.modules.segmentations.logic()
    node = logic.LoadSegmentationFromFile(Path(path).as_posix(), False, name or "")
    if node is None:
        raise OSError(f"{path}: could not be read as a segmentation")
    return node


def load_markups(path: str | os.PathLike[str], name: str | None = None) -> Any:
    """Read a .mrk.json markups file; returns the markups node."""
    logic = slicer.modules.markups.logic()
    node_id = logic.LoadMarkups(Path(path).as_posix(), name or "")
    if not node_id:
        raise OSError(f"{path}: could not be read as markups")
    return slicer.mrmlScene.GetNodeByID(node_id)


def save_scene_mrb(path: str | os.PathLike[str], scene: Any | None = None) -> Path:
    """Write the whole scene (all node data included) to one .mrb file."""
    scene = scene or slicer.mrmlScene
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.SetRootDirectory(path.parent.as_posix())
    if not scene.WriteToMRB(path.as_posix()):
        raise OSError(f"{path}: writing the scene bundle failed")
    return path


def load_scene_mrb(path: str | os.PathLike[str], scene: Any | None = None, clear: bool = True) -> None:
    """Read a .mrb into the scene (cleared first unless ``clear=False``)."""
    scene = scene or slicer.mrmlScene
    path = Path(path).resolve()
    if clear:
        scene.Clear(False)
    if not scene.ReadFromMRB(path.as_posix()):
        raise OSError(f"{path}: reading the scene bundle failed")
