"""The trame application: trame-slicer's scene, views and segment editor wired to the BMD workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import slicer
from trame.app import TrameApp
from trame_server.utils.typed_state import TypedState
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import LayoutButtonLogic, LoadVolumeLogic, SegmentEditorLogic
from trame_slicer.app.ui import ViewerLayoutState
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories

from ..settings import AnalysisOptions
from .downloads import ReportDownloads
from .origin import install_origin_check
from .ui import WorkflowUI
from .workflow import LoadedCase, Workflow, bind_scene_globals

# CT display windows (width, level) in HU: the usual abdominal soft-tissue and bone windows.
WINDOWS_HU = {"soft": (400.0, 40.0), "bone": (1800.0, 400.0)}
# Label segments drawn as surfaces in the 3D view (skin, fat and organs would hide the spine).
SHOW_3D_PREFIXES = ("vertebra", "sacrum", "femur", "hip", "psoas")
# Label outlines drawn in the slice views: bone and the muscles the calibration uses (organs would clutter).
SHOW_2D_PREFIXES = (*SHOW_3D_PREFIXES, "paraspinal", "subcutaneous_fat")


class OBMDWebApp(TrameApp):
    def __init__(self, server: Any = None, out_dir: Path = Path("obmd-web-out"), dataset_dir: Path | None = None,
                 options: AnalysisOptions | None = None, phantom_seed: int = 0,
                 phantom_spacing_mm: float | None = None) -> None:
        super().__init__(server)
        self._phantom_seed = int(phantom_seed)
        self._anatomy_3d: Any = None
        self.phantom_spacing_mm = phantom_spacing_mm
        self.server.enable_module(trame_slicer_module)
        self.server.controller.on_server_bind.add(install_origin_check)  # /ws: this app's own pages only
        self.downloads = ReportDownloads()  # saved reports to the user's browser (Download PDF / zip)
        self.server.controller.on_server_bind.add(self.downloads.install)
        self.state.trame__title = "OpportunisticBMD"
        self.slicer_app = SlicerApp()
        bind_scene_globals(self.slicer_app)
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.load_logic = LoadVolumeLogic(self.server, self.slicer_app)
        self.viewer = TypedState(self.state, ViewerLayoutState)
        out_dir = Path(out_dir)
        self.workflow = Workflow(
            self.slicer_app, self.state, out_dir, dataset_dir or out_dir / "nnUNet_raw" / "Dataset901_OBMD",
            on_outputs=self.show_case, options=options, downloads=self.downloads,
        )
        self.ui = WorkflowUI(
            self.server,
            self.layout_logic.layout_manager,
            actions={
                "analyze": self.in_background(self.workflow.analyze),
                "cancel_analysis": self.workflow.cancel_analysis,
                "recompute": self.in_background(self.recompute),
                "save_report": self.in_background(self.workflow.save_report),
                "export": self.workflow.export_training_case,
                "edit_segment": self.edit_segment,
                "toggle_editor": self.toggle_editor,
                "window": self.set_window,
                "digital_patient": self.in_background(self.new_digital_patient),
                "calibration": self.in_background(self.set_calibration),
                "composition": self.in_background(self.set_composition),
                "confirm_delete": self.confirm_delete_segment,
                "cancel_delete": self.workflow.cancel_delete_segment,
            },
        )
        self.editor_logic.set_ui(self.ui.segment_editor_ui)
        # the editor's trash icon deletes at once: ask first (the removal itself stays the editor's, undoable)
        delete_clicked = self.ui.segment_editor_ui.delete_segment_clicked
        delete_clicked.disconnect(self.editor_logic._on_delete_segment_clicked)
        delete_clicked.connect(self.ask_delete_segment)
        self.layout_logic.set_ui(self.ui.layout_button)
        self.load_logic.set_ui(self.ui.load_volume_ui)
        self.load_logic.volume_loaded.connect(self.workflow.use_volume_node)
        self._edit_check: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_segmentation_modified)

    # ------------------------------------------------------------------------------------------
    def in_background(self, coroutine_function: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
        """A page action that starts ``coroutine_function`` as a task and returns at once: wslink waits for an
        awaited action before reading the page's next message, so Cancel, the views and the editor would
        freeze until an Analyze or Recompute ended."""

        async def run(*args: Any, **kwargs: Any) -> None:
            try:
                await coroutine_function(*args, **kwargs)
            finally:
                self.state.flush()  # outside the trigger's own `with state`: send what changed

        def start(*args: Any, **kwargs: Any) -> None:
            task = asyncio.get_running_loop().create_task(run(*args, **kwargs))
            self._tasks.add(task)  # the loop keeps weak references only
            task.add_done_callback(self._tasks.discard)

        return start

    def show_case(self, case: LoadedCase) -> None:
        """Show the CT and whatever the analysis made (segments in 2D and 3D, keypoints)."""
        display = self.slicer_app.display_manager
        display.show_volume_in_slice_background(case.volume_node)
        display.show_volume_in_slice_foreground(None)
        vr = self.slicer_app.volume_rendering  # an uploaded CT comes with volume rendering: slow on a CPU
        if vr.has_vr_display_node(case.volume_node):
            vr.get_vr_display_node(case.volume_node).SetVisibility(False)
        self.viewer.data.is_volume_loaded = True
        outputs = case.outputs
        if outputs is None:
            self.set_window("soft")
            display.reset_views()
            if case.labels_node is not None:
                self._style_labels(case.labels_node)
            return
        if case.labels_node is not None:
            self._style_labels(case.labels_node)
        roi_node = outputs.roi_segmentation_node
        if roi_node is not None:
            roi_display = roi_node.GetDisplayNode()
            roi_display.SetOpacity2DFill(0.45)
            roi_display.SetOpacity2DOutline(1.0)
            self.slicer_app.segmentation_editor.set_active_segmentation(roi_node, case.volume_node)
            self.slicer_app.segmentation_editor.set_surface_representation_enabled(True)
        if outputs.markups_node is not None:
            markups_display = outputs.markups_node.GetDisplayNode()
            if markups_display is not None:
                markups_display.SetGlyphScale(2.0)
                markups_display.SetTextScale(2.5)
        for view in self.slicer_app.view_manager.get_threed_views():
            view.reset_camera()
            view.schedule_render()
        # Open on the first vertebra of the summary: its trabecular ROI, the psoas and the fat in one slice.
        used = (outputs.result.results.get("spine", {}).get("summary", {}).get("levels_used") or [None])[0]
        self.centre_views_on(f"trabecular_{used}" if used else "muscle_roi")
        self.state.flush()

    def centre_views_on(self, segment_id: str) -> None:
        centre = self.workflow.segment_centre_ras(segment_id)
        if centre is not None:
            slicer.vtkMRMLSliceNode.JumpAllSlices(
                self.slicer_app.scene, *map(float, centre), slicer.vtkMRMLSliceNode.CenteredJumpSlice
            )

    def _style_labels(self, labels_node: Any) -> None:
        """Labels as thin outlines in 2D (ROIs stay readable); bones and psoas as surfaces in 3D.

        Surfaces are made on a separate segmentation holding copies of those few segments only:
        converting every label (skin, fat, bowel...) to a surface took seconds on a CPU."""
        labels_node.CreateDefaultDisplayNodes()
        display = labels_node.GetDisplayNode()
        display.SetOpacity2DFill(0.0)
        display.SetOpacity2DOutline(0.8)
        display.SetVisibility3D(False)
        segmentation = labels_node.GetSegmentation()
        for segment_id in segmentation.GetSegmentIDs():
            display.SetSegmentVisibility2DOutline(segment_id, segment_id.startswith(SHOW_2D_PREFIXES))
        if self._anatomy_3d is not None and self._anatomy_3d.GetScene() is not None:
            if self._anatomy_3d.GetAttribute("OBMD.AnatomyOf") == labels_node.GetID():
                return  # already built for these labels
            self.slicer_app.scene.RemoveNode(self._anatomy_3d)
        anatomy = self.slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Anatomy (3D)")
        anatomy.SetHideFromEditors(True)
        anatomy.SetAttribute("OBMD.AnatomyOf", labels_node.GetID())
        anatomy.CreateDefaultDisplayNodes()
        anatomy.SetReferenceImageGeometryParameterFromVolumeNode(self.workflow.case.volume_node)
        for segment_id in segmentation.GetSegmentIDs():
            if segment_id.startswith(SHOW_3D_PREFIXES):
                anatomy.GetSegmentation().CopySegmentFromSegmentation(segmentation, segment_id, False)
        anatomy.GetDisplayNode().SetVisibility2D(False)
        anatomy.GetDisplayNode().SetOpacity3D(0.6)
        anatomy.CreateClosedSurfaceRepresentation()
        self._anatomy_3d = anatomy

    async def new_digital_patient(self) -> None:
        """Next digital patient (seed + 1), with the spacing the app was started with."""
        self._phantom_seed += 1
        await self.workflow.load_digital_patient(self._phantom_seed, self.phantom_spacing_mm)

    async def set_calibration(self, method: str) -> None:
        await self.workflow.set_calibration(method)
        self.state.flush()

    async def set_composition(self, psoas_fat_percent=None, marrow_fat_percent=None) -> None:
        await self.workflow.set_composition(psoas_fat_percent, marrow_fat_percent)
        self.state.flush()

    def set_window(self, name: str) -> None:
        case = self.workflow.case
        if case is None:
            return
        width, level = WINDOWS_HU[name]
        display = case.volume_node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(width, level)

    def toggle_editor(self) -> None:
        visible = not self.viewer.data.is_drawer_visible
        self.viewer.data.is_drawer_visible = visible
        self.viewer.data.active_tool = "SegmentEditorUI" if visible else None

    def edit_segment(self, segment_id: str) -> None:
        """Select a ROI segment in the segment editor, open the editor and centre the slices on it."""
        editor = self.slicer_app.segmentation_editor
        if editor.active_segmentation is None or editor.get_segment(segment_id) is None:
            return
        editor.set_active_segment_id(segment_id)
        self.viewer.data.is_drawer_visible = True
        self.viewer.data.active_tool = "SegmentEditorUI"
        self.centre_views_on(segment_id)

    def ask_delete_segment(self, segment_id: str) -> None:
        self.workflow.ask_delete_segment(segment_id)
        self.state.flush()

    def confirm_delete_segment(self) -> None:
        self.workflow.confirm_delete_segment(self.slicer_app.segmentation_editor.remove_segment)
        self.state.flush()

    def _on_segmentation_modified(self, *_: Any) -> None:
        """The editor changed the ROI segmentation (fires many times per stroke; also on delete and undo):
        compare the segments once it settles."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._edit_check is not None:
            self._edit_check.cancel()
        self._edit_check = loop.call_later(0.3, self._refresh_edits)

    def _refresh_edits(self) -> None:
        self._edit_check = None
        if self.workflow.refresh_edits():
            self.state.flush()

    async def recompute(self) -> None:
        await self.workflow.recompute()
        self.state.flush()
