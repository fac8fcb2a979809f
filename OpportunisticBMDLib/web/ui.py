"""Page layout: trame-slicer's viewer layout plus the BMD workflow (actions bar, results panel).

Elements the browser test (and a user) looks for carry ``data-testid`` attributes.
"""

from __future__ import annotations

from typing import Any

from trame.widgets import client, html
from trame.widgets.vuetify3 import (
    Template,
    VAlert,
    VBtn,
    VCard,
    VCardActions,
    VCardText,
    VCardTitle,
    VChip,
    VDialog,
    VDivider,
    VNavigationDrawer,
    VProgressLinear,
    VSelect,
    VTable,
    VTextField,
)
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.ui import ControlButton, LayoutButton, LoadVolumeUI, ViewerLayout
from trame_slicer.app.ui.segmentation import SegmentEditorState, SegmentEditorUI, SegmentEditorUndoRedoUI

PANEL_CSS = """
.obmd-panel td, .obmd-panel th { padding: 2px 6px !important; height: 26px !important; font-size: 13px; }
.obmd-panel th { font-weight: 600 !important; }
.obmd-num { text-align: right; font-variant-numeric: tabular-nums; }
.obmd-big { font-size: 28px; font-weight: 600; line-height: 1.1; }
.obmd-excluded { opacity: 0.55; }
"""

# Category -> chip color (ACR wording as results.json gives it; unknown words stay grey). No category in the
# results (not measurable, HU only): grey, never a colour that reads as a finding.
CATEGORY_COLOR_JS = (
    "obmd_view.summary.category_known ? (({'normal': 'green', 'osteopenia': 'orange', 'low bone mass': 'orange', "
    "'osteoporosis': 'red'})[String(obmd_view.summary.category).toLowerCase()] || 'grey') : 'grey'"
)
# results.json "status" -> alert type (absent in results older than the status: no alert)
STATUS_TYPE_JS = (
    "({'complete': 'success', 'partial': 'warning', 'not_measurable': 'error'})[obmd_view.status.status] || 'info'"
)


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)


def legend_items() -> list[tuple[str, str]]:
    """(color, meaning) of what the slice and 3D views draw, colors as the segments get them (mrml.segment_names)."""
    from ..mrml.segment_names import color_for

    return [
        (_hex(color_for("trabecular_L1")), "trabecular ROI (measured)"),
        (_hex(color_for("muscle_roi")), "muscle ROI (psoas, calibration)"),
        (_hex(color_for("fat_roi")), "fat ROI (calibration)"),
        ("#d9c27a", "outlines: segmented bones and muscles; red dots: vertebra centres"),
        ("#000000", "slices in radiological convention (patient's right on screen left, anterior up)"),
    ]


def _testid(name: str) -> list[str]:
    return [f'data-testid="{name}"']


class WorkflowUI:
    """Builds the page. ``actions`` maps names ("analyze", "recompute", ...) to server callbacks."""

    def __init__(self, server: Any, layout_manager: Any, actions: dict[str, Any]) -> None:
        self.server = server
        self.actions = actions
        with ViewerLayout(server, title="OpportunisticBMD", is_drawer_visible=False) as self.layout:
            client.Style(PANEL_CSS)
            v = self.layout.typed_state.name  # the viewer's state names (namespaced by trame-slicer)
            self.layout.title.set_text("OpportunisticBMD")
            with self.layout.appbar, Template(v_slot_prepend=True):
                self.load_volume_ui = LoadVolumeUI()
                ControlButton(
                    name="New digital patient (synthetic CT with known BMD, for teaching)",
                    icon="mdi-account-plus", click=actions["digital_patient"], disabled=("obmd_busy",),
                    raw_attrs=_testid("digital-patient"),
                )
            with self.layout.appbar:
                self._action_buttons()
                with Template(v_slot_extension=True, v_if=("obmd_busy",)):
                    # Analyze reports its progress; Recompute and a new digital patient only that they run
                    with VProgressLinear(
                        model_value=("obmd_progress",), color="light-blue", height=18, striped=True,
                        indeterminate=("obmd_busy_task !== 'analyze'",),
                        raw_attrs=[*_testid("progress"), ':data-task="obmd_busy_task"'],
                    ):
                        html.Small("{{ obmd_progress_message }}{{ obmd_busy_task === 'analyze' ? ' ('"
                                   " + Math.round(obmd_progress) + ' %)' : '…' }}")
            with self.layout.drawer:
                active_id = TypedState(server.state, SegmentEditorState).name.segment_list.active_segment_id
                html.Div(
                    "Editing: {{ (obmd_roi_segments.find(s => s.id === " + active_id + ") || {name: "
                    + active_id + "}).name }} — erase or paint in the views, then Recompute",
                    classes="text-subtitle-2 pa-2", raw_attrs=_testid("editing"),
                )
                self.segment_editor_ui = SegmentEditorUI(v_if=(f"{v.active_tool} === 'SegmentEditorUI'",))
            with self.layout.toolbar:
                self.layout_button = LayoutButton(classes="mt-1", disabled=(f"!{v.is_volume_loaded}",))
                ControlButton(
                    name="{{ " + v.is_drawer_visible + " ? 'Close the segment editor' : 'Edit ROIs' }}",
                    icon="mdi-brush", click=actions["toggle_editor"], active=(v.is_drawer_visible,),
                    disabled=("!obmd_has_results",), classes="mt-1", raw_attrs=_testid("open-editor"),
                )
                ControlButton(
                    name="Soft-tissue window (W 400 / L 40)", icon="mdi-alpha-s-box-outline",
                    click=(actions["window"], "['soft']"), classes="mt-1", disabled=(f"!{v.is_volume_loaded}",),
                )
                ControlButton(
                    name="Bone window (W 1800 / L 400)", icon="mdi-alpha-b-box-outline",
                    click=(actions["window"], "['bone']"), classes="mt-1", disabled=(f"!{v.is_volume_loaded}",),
                )
            with self.layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.segment_editor_ui, v_if=(v.is_drawer_visible,))
            with self.layout.content:
                layout_manager.initialize_layout_grid(self.layout)
                self._confirm_delete_dialog()
            with VNavigationDrawer(location="right", permanent=True, width=470, classes="obmd-panel"):
                self._results_panel()

    # ------------------------------------------------------------------------------------------
    def _action_buttons(self) -> None:
        a = self.actions
        VChip("{{ obmd_case_name }}{{ obmd_edited.length ? ' (edited)' : '' }}", v_if=("obmd_case_name",),
              variant="outlined", classes="mr-4", prepend_icon="mdi-account-box-outline",
              color=("obmd_edited.length ? 'warning' : undefined",), raw_attrs=_testid("case-name"))
        VBtn("Analyze", click=a["analyze"], color="primary", variant="flat", prepend_icon="mdi-play",
             disabled=("!obmd_case_name || obmd_busy || obmd_cancelling",),
             loading=("obmd_busy_task === 'analyze'",), classes="mr-2", raw_attrs=_testid("analyze"))
        VBtn("Cancel", click=a["cancel_analysis"], v_if=("obmd_busy_task === 'analyze'",), color="error",
             variant="tonal", prepend_icon="mdi-stop", classes="mr-2", raw_attrs=_testid("cancel"))
        VBtn("Recompute", click=a["recompute"], prepend_icon="mdi-refresh",
             color=("obmd_stale ? 'warning' : undefined",), variant=("obmd_stale ? 'flat' : 'tonal'",),
             loading=("obmd_busy_task === 'recompute'",),
             disabled=("!obmd_has_results || obmd_busy",), classes="mr-2", raw_attrs=_testid("recompute"))
        VBtn("Save report", click=a["save_report"], prepend_icon="mdi-content-save", variant="tonal",
             disabled=("!obmd_has_results || obmd_busy",), classes="mr-2", raw_attrs=_testid("save-report"))
        # the last saved report of the results shown, to the user's browser (web/downloads.py serves it)
        for kind, title, icon in (("pdf", "Download PDF", "mdi-file-pdf-box"),
                                  ("zip", "Download report (zip)", "mdi-folder-zip-outline")):
            VBtn(title, href=(f"obmd_report_urls.{kind}",), prepend_icon=icon, variant="tonal",
                 disabled=(f"!obmd_report_urls.{kind} || obmd_busy",), classes="mr-2",
                 title=("obmd_report_urls.name ? 'Saved report ' + obmd_report_urls.name : 'Save report first'",),
                 raw_attrs=[*_testid(f"download-{kind}"), "download"])
        VBtn("Export training case", click=a["export"], prepend_icon="mdi-database-export", variant="tonal",
             disabled=("!obmd_has_results || obmd_busy",), classes="mr-2", raw_attrs=_testid("export"))

    def _results_panel(self) -> None:
        a = self.actions
        with html.Div(classes="pa-2", raw_attrs=_testid("results-panel")):
            VAlert(text=("obmd_error",), v_if=("obmd_error",), type="error", density="compact", classes="mb-2",
                   raw_attrs=_testid("error"))
            VAlert(text=("obmd_message",), v_if=("obmd_message && !obmd_error",),
                   type=("obmd_stale ? 'warning' : 'info'",), density="compact", variant="tonal", classes="mb-2",
                   raw_attrs=_testid("message"))
            with html.Div(v_if=("obmd_has_results",)):
                self._summary_card()
                self._legend()
                self._levels_table()
                self._calibration_table()
                self._hip_table()
                self._qc_list()
                self._edit_list(a)
            with VCard(v_else=True, variant="tonal", classes="mb-2"):
                VCardText(
                    "Spine: trabecular volumetric BMD (mg/cm³ hydroxyapatite) per vertebra, calibrated on the "
                    "patient's own muscle and fat (no phantom). Hip: CTXA-like areal BMD and T-scores when both "
                    "femurs are in the scan. Press Analyze to start."
                )

    def _summary_card(self) -> None:
        with VCard(variant="tonal", classes="mb-2", raw_attrs=_testid("summary")):
            VCardTitle("Spine summary (levels {{ obmd_view.summary.levels }})", classes="text-subtitle-1")
            with VCardText(classes="d-flex align-center flex-wrap pb-1"):
                html.Span("{{ obmd_view.summary.vbmd }}", classes="obmd-big mr-2",
                          # a number the results call not measurable must not read as a finding
                          style=("obmd_view.status.status === 'not_measurable' ? 'opacity: 0.45' : ''",),
                          raw_attrs=[*_testid("summary-vbmd"), ':data-value="obmd_view.summary.vbmd_mg_cm3"'])
                html.Span("{{ obmd_view.summary.sd }}", classes="mr-3",
                          style=("obmd_view.summary.sd_mg_cm3 === null ? 'opacity: 0.7; font-size: 12px' : "
                                 "'font-size: 15px; font-weight: 600'",),
                          raw_attrs=[*_testid("summary-sd"), ':data-value="obmd_view.summary.sd_mg_cm3"'])
                VChip("{{ obmd_view.summary.category }}", color=(CATEGORY_COLOR_JS,),
                      variant=("obmd_view.summary.category_known ? 'flat' : 'outlined'",),
                      prepend_icon=("obmd_view.summary.category_known ? undefined : 'mdi-help-circle-outline'",),
                      raw_attrs=[*_testid("category"), ':data-known="obmd_view.summary.category_known"'])
            # the reasons, unless the status below already lists them
            with html.Ul(v_if=("obmd_view.summary.category_reasons.length && !obmd_view.status.reasons.length",),
                         classes="text-caption ml-8 mb-1",
                         raw_attrs=_testid("category-reasons")):
                html.Li("{{ reason }}", v_for="(reason, i) in obmd_view.summary.category_reasons", key="i")
            VCardText("{{ obmd_view.summary.note }}", classes="text-caption pt-0")
            VAlert(v_if=("obmd_view.status.status",), type=(STATUS_TYPE_JS,), density="compact", variant="tonal",
                   classes="mx-2 mb-2", raw_attrs=[*_testid("status"), ':data-status="obmd_view.status.status"'],
                   text=("'Status: ' + obmd_view.status.title + (obmd_view.status.reasons.length ? ' — ' + "
                         "obmd_view.status.reasons.map(r => r.message).join('; ') : '')",))
            VChip("out of date: press Recompute", v_if=("obmd_stale",), color="warning", size="small",
                  classes="ml-4 mb-2", prepend_icon="mdi-alert", raw_attrs=_testid("stale"))

    def _legend(self) -> None:
        with html.Div(classes="text-caption mb-1 d-flex flex-wrap", raw_attrs=_testid("legend")):
            for color, meaning in legend_items():
                with html.Span(classes="mr-3", style="white-space: nowrap;"):
                    html.Span(style=f"display:inline-block;width:10px;height:10px;background:{color};margin-right:4px;")
                    html.Span(meaning)

    def _levels_table(self) -> None:
        html.Div("Per vertebra (trabecular ROI)", classes="text-subtitle-2 mt-2")
        with VTable(density="compact", raw_attrs=_testid("levels-table")):
            with html.Thead(), html.Tr():
                for title, cls in (("Level", ""), ("vBMD mg/cm³", "obmd-num"), ("HU mean", "obmd-num"),
                                   ("HU SD", "obmd-num"), ("ROI cm³", "obmd-num")):
                    html.Th(title, classes=cls)
            with html.Tbody():
                with html.Tr(
                    v_for="row in obmd_view.levels", key="row.level",
                    classes=("row.used ? '' : 'obmd-excluded'",),
                    raw_attrs=[*_testid("level-row"), ':data-level="row.level"', ':data-vbmd="row.vbmd_mg_cm3"',
                               ':data-hu="row.hu_mean"'],
                ):
                    html.Td("{{ row.level }}{{ row.used ? '' : ' (not in summary' + (row.reasons ? ': ' "
                            "+ row.reasons : '') + ')' }}")
                    html.Td("{{ row.vbmd }}", classes="obmd-num")
                    html.Td("{{ row.hu }}", classes="obmd-num")
                    html.Td("{{ row.hu_sd }}", classes="obmd-num")
                    html.Td("{{ row.volume_cm3 }}", classes="obmd-num")

    def _calibration_table(self) -> None:
        html.Div("Calibration (patient's own tissues)", classes="text-subtitle-2 mt-2")
        method = "obmd_view.calibration.find(r => r.key === 'method')?.raw"
        VSelect(
            label="Calibration method", items=("obmd_calibration_methods",), item_props=True,
            model_value=(method,),
            update_modelValue=(self.actions["calibration"], "[$event]"),
            density="compact", hide_details=True, disabled=("obmd_busy",), classes="my-1",
            raw_attrs=_testid("calibration-method"),
        )
        html.Div(  # how the chosen method is validated: a category can flip from one method to the next
            "{{ (obmd_calibration_methods.find(m => m.value === " + method + ") || {subtitle: ''}).subtitle }}",
            classes="text-caption mb-1", raw_attrs=_testid("calibration-validation"),
        )
        with html.Div(classes="d-flex align-center ga-1 my-1"):
            # the patient's composition when known (water-fat MRI); blank: typical for the age
            VTextField(v_model=("obmd_psoas_fat_percent", ""), label="Psoas fat %", type="number",
                       density="compact", hide_details=True, disabled=("obmd_busy",),
                       placeholder="typical", raw_attrs=_testid("psoas-fat"))
            VTextField(v_model=("obmd_marrow_fat_percent", ""), label="Marrow fat %", type="number",
                       density="compact", hide_details=True, disabled=("obmd_busy",),
                       placeholder="typical", raw_attrs=_testid("marrow-fat"))
            VBtn("Apply", density="compact", variant="tonal", disabled=("obmd_busy",),
                 click=(self.actions["composition"], "[obmd_psoas_fat_percent, obmd_marrow_fat_percent]"),
                 raw_attrs=_testid("apply-composition"))
        with VTable(density="compact", raw_attrs=_testid("calibration-table")):
            with html.Tbody():
                with html.Tr(v_for="row in obmd_view.calibration", key="row.key",
                             raw_attrs=[':data-key="row.key"', ':data-value="row.raw"']):
                    html.Td("{{ row.label }}")
                    html.Td("{{ row.value }}", classes="obmd-num")

    def _hip_table(self) -> None:
        with html.Div(v_if=("obmd_view.hip.length",)):
            html.Div("Hip (CTXA-like areal BMD)", classes="text-subtitle-2 mt-2")
            with VTable(density="compact", raw_attrs=_testid("hip-table")):
                with html.Thead(), html.Tr():
                    for title in ("Side", "Region", "aBMD g/cm²", "T-score", "Area cm²"):
                        html.Th(title)
                with html.Tbody(), html.Tr(v_for="(row, i) in obmd_view.hip", key="i",
                                           raw_attrs=[*_testid("hip-row"), ':data-t="row.t_score"']):
                    html.Td("{{ row.side }}")
                    html.Td("{{ row.region }}")
                    html.Td("{{ row.abmd }}", classes="obmd-num")
                    html.Td("{{ row.t_score }}", classes="obmd-num")
                    html.Td("{{ row.area }}", classes="obmd-num")
        with html.Div(v_if=("obmd_hip_pictures.length",), classes="d-flex flex-wrap",
                      raw_attrs=_testid("hip-pictures")):
            with html.Figure(v_for="pic in obmd_hip_pictures", key="pic.side", classes="ma-1",
                             style="width: 48%; margin: 0;"):
                html.Img(src=("pic.src",), alt="hip: DXA-like projection with its regions",
                         style="width: 100%; background: black;",
                         raw_attrs=[':data-side="pic.side"', *_testid("hip-picture")])
                html.Figcaption("{{ pic.side }} hip (regions: neck box, trochanter, intertrochanter, total hip)",
                                classes="text-caption")

    def _qc_list(self) -> None:
        with html.Div(v_if=("obmd_view.qc.length",), raw_attrs=_testid("qc")):
            html.Div("Quality checks", classes="text-subtitle-2 mt-2")
            VAlert(
                v_for="(item, i) in obmd_view.qc", key="i", density="compact", variant="tonal", classes="mb-1",
                type=("item.severity === 'error' ? 'error' : (item.severity === 'warning' ? 'warning' : 'info')",),
                text=("item.message",), raw_attrs=[':data-code="item.code"'],
            )

    def _confirm_delete_dialog(self) -> None:
        """Asked before the segment editor's trash icon deletes a ROI (the numbers would lose it)."""
        a = self.actions
        with VDialog(model_value=("!!obmd_confirm_delete",), max_width=460, persistent=True), VCard(
                raw_attrs=_testid("confirm-delete")):
            VCardTitle("Delete ROI {{ obmd_confirm_delete?.name }}?", classes="text-subtitle-1")
            VCardText("Its voxels leave the measurement: Recompute then measures without it, and the case is "
                      "marked edited. Undo in the segment editor brings it back.")
            with VCardActions():
                VBtn("Cancel", click=a["cancel_delete"], variant="text", raw_attrs=_testid("delete-cancel"))
                VBtn("Delete", click=a["confirm_delete"], color="error", variant="flat",
                     raw_attrs=_testid("delete-confirm"))

    def _edit_list(self, a: dict[str, Any]) -> None:
        VDivider(classes="my-2")
        html.Div("Review / edit a ROI (centres the views, opens the segment editor)", classes="text-subtitle-2")
        with html.Div(classes="d-flex flex-wrap"):
            VChip(
                "{{ item.name }}{{ obmd_edited.includes(item.id) ? ' (edited)' : '' }}",
                v_for="item in obmd_roi_segments", key="item.id", color=("item.color",), variant="tonal",
                size="small", classes="ma-1", prepend_icon="mdi-target",
                click=(a["edit_segment"], "[item.id]"),
                raw_attrs=[':data-testid="`edit-${item.id}`"'],
            )
        html.Div("Deleted since Analyze: {{ obmd_deleted.join(', ') }} (Undo in the segment editor restores)",
                 v_if=("obmd_deleted.length",), classes="text-caption", raw_attrs=_testid("deleted"))
        html.Div(
            "Saved: {{ obmd_last_report }}", v_if=("obmd_last_report",), classes="text-caption mt-2",
            raw_attrs=_testid("last-report"),
        )
        html.Div(
            "Exported: {{ obmd_last_export }}", v_if=("obmd_last_export",), classes="text-caption",
            raw_attrs=_testid("last-export"),
        )
