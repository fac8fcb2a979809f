"""3D Slicer module panel of OpportunisticBMD: a thin GUI over OpportunisticBMDLib.mrml.logic.BMDLogic.

Everything that computes lives in the library (tested headless on slicer-core); this file only binds
the panel to a parameter node, runs Analyze in a background ``obmd analyze`` process (or in Slicer's
own process), and shows the outputs.
"""

import logging
import os
import sys
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Source checkout added to Slicer's module paths: the library sits next to this folder (an installed
# extension has it next to this file instead, already importable).
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_SOURCE_ROOT, "OpportunisticBMDLib")) and _SOURCE_ROOT not in sys.path:
    sys.path.append(_SOURCE_ROOT)

from OpportunisticBMDLib.calibration import CALIBRATIONS  # noqa: E402  (after the path above)
from OpportunisticBMDLib.settings import DEFAULT_CALIBRATION  # noqa: E402

CALIBRATION_METHODS = list(CALIBRATIONS)


class OpportunisticBMD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Opportunistic BMD"
        self.parent.categories = ["Quantification"]
        self.parent.contributors = ["OpportunisticBMD developers"]
        self.parent.helpText = (
            "Bone mineral density from routine CT: vertebral trabecular vBMD calibrated with psoas muscle and"
            " fat (or a phantom), with editable ROIs and one-second Recompute. See the README."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, MONAI and PyTorch."
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A Sample Data entry that generates a digital patient (synthetic CT of known BMD with its labels)."""
    import SampleData

    def generate(source):
        from OpportunisticBMDLib.mrml.digital_patient import load_digital_patient

        with slicer.util.tryWithErrorDisplay("Generating the digital patient failed.", waitCursor=True):
            volumeNode, _ = load_digital_patient(seed=0)
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
            return [volumeNode]

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="OpportunisticBMD",
        sampleName="OBMDDigitalPatient",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "OpportunisticBMD.png"),
        uris=["obmd://digital-patient/0"],  # never downloaded: the custom loader generates it
        fileNames=["OBMDDigitalPatient.nii.gz"],
        nodeNames=["Digital patient 0"],
        customDownloader=generate,
    )


@parameterNodeWrapper
class OpportunisticBMDParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    calibrationMethod: Annotated[str, Choice(CALIBRATION_METHODS)] = DEFAULT_CALIBRATION
    phantomSlope: Annotated[float, WithinRange(0.0, 10.0)] = 1.0  # mg/cm3 per HU
    phantomIntercept: Annotated[float, WithinRange(-500.0, 500.0)] = 0.0  # mg/cm3
    psoasFatPercent: Annotated[float, WithinRange(-1.0, 50.0)] = -1.0  # below 0: typical for the age
    marrowFatPercent: Annotated[float, WithinRange(4.0, 95.0)] = 4.0  # below 5: typical for the age
    overwriteEdited: bool = False
    runInBackground: bool = True
    outputTable: vtkMRMLTableNode
    outputRoiSegmentation: vtkMRMLSegmentationNode
    outputKeypoints: vtkMRMLMarkupsFiducialNode
    outputLabels: vtkMRMLSegmentationNode


class OpportunisticBMDWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(500)
        self._jobTimer.connect("timeout()", self.onJobTimer)
        self._editObservation = None
        self._lastResult = None
        self._overwriteEdited = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OpportunisticBMD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OpportunisticBMDLogic()

        self.ui.staleLabel.setVisible(False)
        self.ui.hipTableView.setVisible(False)
        self.ui.hipPictureLabel.setVisible(False)
        self.ui.reportDirectoryButton.directory = os.path.join(os.path.expanduser("~"), "OpportunisticBMD", "reports")
        self.ui.datasetDirectoryButton.directory = os.path.join(
            os.path.expanduser("~"), "OpportunisticBMD", "Dataset501_OBMD"
        )
        editor = self.ui.segmentEditorWidget
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setEffectNameOrder(["Paint", "Erase", "Threshold", "Islands", "Scissors", "Smoothing"])
        editor.unorderedEffectsVisible = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyzeButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReportButton)
        self.ui.exportTrainingCaseButton.connect("clicked(bool)", self.onExportTrainingCaseButton)
        self.ui.loadDigitalPatientButton.connect("clicked(bool)", self.onLoadDigitalPatientButton)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        self._stopWatchingEdits()
        if self._job is not None:
            self._job.cancel()

    def enter(self):
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self._segmentEditorNode())
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    @staticmethod
    def _segmentEditorNode():
        """The panel's own segment editor node (a singleton, so the Segment Editor module's is untouched)."""
        tag = "OpportunisticBMD"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def exit(self):
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None):
        p = self._parameterNode
        busy = self._job is not None
        self.ui.analyzeButton.enabled = bool(p and p.inputVolume) or busy
        self.ui.analyzeButton.text = "Cancel" if busy else "Analyze"
        haveRois = bool(p and p.inputVolume and p.outputRoiSegmentation)
        self.ui.recomputeButton.enabled = haveRois and not busy
        self.ui.saveReportButton.enabled = self._lastResult is not None and not busy
        self.ui.exportTrainingCaseButton.enabled = bool(p and p.inputVolume and self._labelsNode()) and not busy
        self.ui.phantomSlopeSpinBox.enabled = bool(p and CALIBRATIONS[p.calibrationMethod].needs_phantom_line)
        self.ui.phantomInterceptSpinBox.enabled = bool(p and CALIBRATIONS[p.calibrationMethod].needs_phantom_line)

    def _labelsNode(self):
        p = self._parameterNode
        return p.inputSegmentation or p.outputLabels

    def _log(self, text):
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(text)

    def _progress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    # ------------------------------------------------------------------ Analyze
    def onAnalyzeButton(self):
        if self._job is not None:  # the button reads "Cancel" while a job runs
            self._job.cancel()
            return
        p = self._parameterNode
        if not self.logic.ensureDependencies(needModels=p.inputSegmentation is None):
            return
        self._overwriteEdited = p.overwriteEdited
        if p.outputRoiSegmentation and not p.overwriteEdited:
            from OpportunisticBMDLib.mrml import edits

            edited = edits.update_edited_tags(p.outputRoiSegmentation, p.inputVolume)
            if edited:  # never overwrite a user's edits without asking
                self._overwriteEdited = slicer.util.confirmYesNoDisplay(
                    "These segments were edited: " + ", ".join(edited) + ".\n"
                    "Replace them with the new analysis? (No keeps your edits and measures from them.)"
                )
        self.ui.logTextEdit.clear()
        if p.runInBackground:
            with slicer.util.tryWithErrorDisplay("Failed to start the analysis.", waitCursor=True):
                self._job = self.logic.startBackgroundAnalysis(p)
                self._log("Started: " + " ".join(self._job.argv))
                self._jobTimer.start()
                self._checkCanApply()
            return
        with slicer.util.tryWithErrorDisplay("Analysis failed.", waitCursor=True):
            outputs = self.logic.analyze(p, progress=self._progress, overwriteEdited=self._overwriteEdited)
            self._showOutputs(outputs)

    def onJobTimer(self):
        job = self._job
        for fraction, message in job.poll():
            if fraction is not None:
                self.ui.progressBar.value = int(round(100 * fraction))
            self.ui.statusLabel.text = message
            self._log(message)
        if job.returncode is None:
            return
        self._jobTimer.stop()
        self._job = None
        if job.cancelled:
            self.ui.statusLabel.text = "Cancelled."
        elif not job.finished_with_results:  # exit 3 (not measurable) still has results to show
            slicer.util.errorDisplay("Analysis failed:\n" + job.last_error())
        else:
            with slicer.util.tryWithErrorDisplay("Importing the results failed.", waitCursor=True):
                outputs = self.logic.finishBackgroundAnalysis(self._parameterNode, job, self._overwriteEdited)
                self._showOutputs(outputs)
        job.cleanup()
        self._checkCanApply()

    def _showOutputs(self, outputs):
        p = self._parameterNode
        p.outputTable = outputs.table_node
        p.outputRoiSegmentation = outputs.roi_segmentation_node
        if outputs.markups_node is not None:
            p.outputKeypoints = outputs.markups_node
        if outputs.labels_segmentation_node is not None and p.inputSegmentation is None:
            p.outputLabels = outputs.labels_segmentation_node
        self._lastResult = (outputs.result, outputs.ct)
        self._showTables(outputs)
        editor = self.ui.segmentEditorWidget
        editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        editor.setSegmentationNode(outputs.roi_segmentation_node)
        editor.setSourceVolumeNode(p.inputVolume)
        self._watchEdits(outputs.roi_segmentation_node, outputs.markups_node)
        self.ui.progressBar.value = 100
        from OpportunisticBMDLib.validity import headline

        self.ui.statusLabel.text = headline(outputs.result.results)  # the category only where backed
        slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
        self._checkCanApply()

    # ------------------------------------------------------------------ edits and Recompute
    def _watchEdits(self, segNode, markupsNode):
        from OpportunisticBMDLib.mrml import edits

        self._stopWatchingEdits()
        tag = edits.watch_edits(
            segNode, lambda segmentId: self._markStale(f"edited: {segmentId}"), self._parameterNode.inputVolume
        )
        self._editObservation = (segNode.GetSegmentation(), tag)
        event = slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent
        if markupsNode is not None and not self.hasObserver(markupsNode, event, self._onKeypointMoved):
            self.addObserver(markupsNode, event, self._onKeypointMoved)

    def _stopWatchingEdits(self):
        if self._editObservation is not None:
            segmentation, tag = self._editObservation
            segmentation.RemoveObserver(tag)
            self._editObservation = None

    def _onKeypointMoved(self, caller, event):
        self._markStale("keypoint moved")

    def _markStale(self, why):
        self.ui.staleLabel.setVisible(True)
        self.ui.staleLabel.toolTip = why

    def onRecomputeButton(self):
        with slicer.util.tryWithErrorDisplay("Recompute failed.", waitCursor=True):
            outputs = self.logic.recompute(self._parameterNode)
            self._lastResult = (outputs.result, outputs.ct)
            self._showTables(outputs)
            self._log("Recomputed from the current segments.")

    def _showTables(self, outputs):
        self.ui.resultsTableView.setMRMLTableNode(outputs.table_node)
        self.ui.hipTableView.setMRMLTableNode(outputs.hip_table_node)
        self.ui.hipTableView.setVisible(outputs.hip_table_node is not None)
        self.ui.staleLabel.setVisible(False)
        pictures = outputs.extra.get("hip_pictures") or self.logic.bmd.hip_picture_files(
            outputs.result, tempfile.mkdtemp(prefix="obmd-hip-")
        )
        if pictures:  # Recompute gives none: the picture of the last Analyze stays
            self.ui.hipPictureLabel.setVisible(True)
            pixmap = qt.QPixmap(str(next(iter(pictures.values()))))
            self.ui.hipPictureLabel.setPixmap(pixmap.scaledToWidth(380, qt.Qt.SmoothTransformation))

    # ------------------------------------------------------------------ report, export, sample
    def onSaveReportButton(self):
        with slicer.util.tryWithErrorDisplay("Saving the report failed.", waitCursor=True):
            from OpportunisticBMDLib.output_folder import new_report_folder

            volume = self._parameterNode.inputVolume
            folder = new_report_folder(self.ui.reportDirectoryButton.directory, volume.GetName() if volume else "case")
            written = self.logic.saveReport(volume, *self._lastResult, folder)
            self._log("Report written: " + ", ".join(str(f) for f in written.files.values()))
            for note in written.notes:
                self._log("Note: " + note)

    def onExportTrainingCaseButton(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            files = self.logic.bmd.export_training_case(
                p.inputVolume, self._labelsNode(), self.ui.datasetDirectoryButton.directory
            )
            self._log(f"Training case written: {files['image']} and {files['label']}")

    def onLoadDigitalPatientButton(self):
        with slicer.util.tryWithErrorDisplay("Generating the digital patient failed.", waitCursor=True):
            volumeNode, segNode = self.logic.loadDigitalPatient()
            self._parameterNode.inputVolume = volumeNode
            self._parameterNode.inputSegmentation = segNode
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)


class OpportunisticBMDLogic(ScriptedLoadableModuleLogic):
    """Thin wrapper: parameter node in, OpportunisticBMDLib.mrml.logic.BMDLogic does the work."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._bmd = None

    def getParameterNode(self):
        return OpportunisticBMDParameterNode(super().getParameterNode())

    @property
    def bmd(self):
        if self._bmd is None:
            from OpportunisticBMDLib.mrml.logic import BMDLogic

            self._bmd = BMDLogic()
        return self._bmd

    # Python packages Slicer's own Python lacks (torch comes from the PyTorch extension).
    def ensureDependencies(self, needModels=False, askConfirmation=True):
        from OpportunisticBMDLib.mrml.dependencies import missing_requirements
        from OpportunisticBMDLib.resources import resources_dir

        requirements = str(resources_dir() / "requirements.txt")
        missing = missing_requirements(requirements)
        if missing:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "OpportunisticBMD needs these Python packages, which will be downloaded and installed now:\n"
                + "\n".join(missing)
            ):
                return False
            slicer.util.pip_install(["-r", requirements])
        if needModels:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                slicer.util.errorDisplay("Segmenting needs the PyTorch extension (Extensions Manager).")
                return False
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                if torchLogic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=">=2.2") is None:
                    return False
        return True

    def _options(self, p):
        needs_line = CALIBRATIONS[p.calibrationMethod].needs_phantom_line
        params = {"slope": p.phantomSlope, "intercept": p.phantomIntercept} if needs_line else {}
        from OpportunisticBMDLib.mrml.options import composition_params

        params.update(composition_params(p.psoasFatPercent, p.marrowFatPercent))
        return {"calibration": p.calibrationMethod, "calibration_params": params}

    def _outputs(self, p):
        from OpportunisticBMDLib.mrml.logic import AnalysisOutputs

        return AnalysisOutputs(
            table_node=p.outputTable, roi_segmentation_node=p.outputRoiSegmentation, markups_node=p.outputKeypoints,
            labels_segmentation_node=None if p.inputSegmentation else p.outputLabels,
        )

    def analyze(self, p, progress=None, overwriteEdited=None):
        kwargs = {"progress": progress} if progress else {}
        return self.bmd.analyze(
            p.inputVolume, p.inputSegmentation, self._options(p), outputs=self._outputs(p),
            overwrite_edited=p.overwriteEdited if overwriteEdited is None else overwriteEdited, **kwargs,
        )

    def startBackgroundAnalysis(self, p):
        from OpportunisticBMDLib.mrml.background_job import AnalysisJob

        workDir = tempfile.mkdtemp(prefix="obmd-")
        return AnalysisJob.start(p.inputVolume, p.inputSegmentation, self._options(p), workDir)

    def finishBackgroundAnalysis(self, p, job, overwriteEdited=None):
        outputs = self.bmd.analyze(
            p.inputVolume, p.inputSegmentation, self._options(p), outputs=self._outputs(p),
            overwrite_edited=p.overwriteEdited if overwriteEdited is None else overwriteEdited, result=job.result(),
        )
        outputs.extra["hip_pictures"] = job.picture_files  # shown before the job's folder is deleted
        return outputs

    def recompute(self, p):
        return self.bmd.recompute(
            p.inputVolume, p.outputRoiSegmentation, p.inputSegmentation or p.outputLabels, self._options(p),
            table_node=p.outputTable,
        )

    def saveReport(self, volumeNode, result, ct, folder):
        """The report folder; DICOM SEG, SR and PDF too when the CT came from DICOM: a series loaded by
        Slicer's DICOM module is found through its instance UIDs in Slicer's DICOM database."""
        from OpportunisticBMDLib.mrml.volumes import dicom_source_files

        sourceFiles = dicom_source_files(volumeNode, getattr(slicer, "dicomDatabase", None)) if volumeNode else []
        return self.bmd.save_report(result, ct, folder, dicom_source_files=sourceFiles)

    def loadDigitalPatient(self, seed=0):
        from OpportunisticBMDLib.mrml.digital_patient import load_digital_patient

        return load_digital_patient(seed=seed)


class OpportunisticBMDTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AnalyzeEditRecompute()

    def test_AnalyzeEditRecompute(self):
        """The real logic on a generated digital patient: analyze, erase half the muscle ROI, recompute
        (OpportunisticBMDLib.mrml.self_test.run_self_test, also run headless by Testing/mrml/test_mrml_logic.py)."""
        from OpportunisticBMDLib.mrml.self_test import run_self_test

        self.delayDisplay("Analyzing a digital patient, editing the muscle ROI, recomputing")
        figures = run_self_test(seed=1, region="spine")
        self.assertNotAlmostEqual(figures["muscle_hu_before"], figures["muscle_hu_after"], places=2)
        self.delayDisplay(f"Test passed: {figures}")
