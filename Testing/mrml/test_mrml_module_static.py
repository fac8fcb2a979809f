"""Static checks of the Slicer module (desktop Slicer cannot run here): every widget the Widget code
uses exists in the .ui, every parameter-bound widget names a parameter-node field, and every library
name the module imports exists."""

from __future__ import annotations

import ast
import importlib
import re
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "OpportunisticBMD" / "OpportunisticBMD.py"
UI = REPO / "OpportunisticBMD" / "Resources" / "UI" / "OpportunisticBMD.ui"


def _ui_widgets() -> dict[str, str]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _parameter_fields() -> set[str]:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "OpportunisticBMDParameterNode":
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no OpportunisticBMDParameterNode class")


def test_every_ui_name_used_by_the_widget_exists():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    widgets = _ui_widgets()
    assert used, "the Widget uses no ui names?"
    missing = sorted(used - set(widgets))
    assert not missing, f"names used in OpportunisticBMD.py but absent from the .ui: {missing}"


def test_ui_widget_names_are_unique_and_classes_declared():
    root = ET.parse(UI).getroot()
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names))
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used_classes = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used_classes if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widget classes not declared: {custom - declared}"


def test_parameter_bound_widgets_name_parameter_fields():
    root = ET.parse(UI).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.findtext("string")
    fields = _parameter_fields()
    assert bound and set(bound.values()) <= fields, set(bound.values()) - fields
    for required in ("inputVolume", "inputSegmentation", "calibrationMethod", "outputTable", "outputRoiSegmentation"):
        assert required in bound.values()


def test_library_names_the_module_uses_exist():
    pytest.importorskip("slicer")  # the mrml package's node modules import slicer
    tree = ast.parse(MODULE.read_text())
    imported_modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("OpportunisticBMDLib"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule not imported yet by its package
                    importlib.import_module(f"{node.module}.{alias.name}")
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"  # imports a submodule if it is one
                attribute = getattr(module, alias.name)
                if isinstance(attribute, types.ModuleType):
                    imported_modules[alias.asname or alias.name] = attribute
    assert "edits" in imported_modules
    for name, module in imported_modules.items():  # e.g. edits.watch_edits
        for attr in set(re.findall(rf"\b{name}\.(\w+)", MODULE.read_text())):
            assert hasattr(module, attr), f"{module.__name__}.{attr}"
    from OpportunisticBMDLib.mrml.logic import BMDLogic

    logic_calls = set(re.findall(r"self\.bmd\.(\w+)|self\.logic\.bmd\.(\w+)", MODULE.read_text()))
    for names in logic_calls:
        for name in names:
            assert not name or hasattr(BMDLogic, name), name


def test_the_module_imports_no_removed_library_module():
    """The library's MRML code lives in OpportunisticBMDLib.mrml (mrml_bridge, mrml_scene and slicer_logic are
    gone): the scripted module must name only modules that exist."""
    tree = ast.parse(MODULE.read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    for name in names:
        if name.startswith("OpportunisticBMDLib"):
            assert importlib.util.find_spec(name) is not None, name


def test_calibration_choices_exist_in_the_registry():
    """The module's combo box lists the registry's methods (written once, in OpportunisticBMDLib.calibration)."""
    tree = ast.parse(MODULE.read_text())
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CALIBRATION_METHODS":
            value = node.value
    assert isinstance(value, ast.Call) and ast.unparse(value) == "list(CALIBRATIONS)"
    calibration = pytest.importorskip("OpportunisticBMDLib.calibration")
    assert list(calibration.CALIBRATIONS)[0] == "auto"  # the default: in-scan pad if found, else muscle-fat


# Widget classes Slicer's parameterNodeWrapper GUI connectors accept per parameter type
# (Slicer Base/Python/slicer/parameterNodeWrapper/guiConnectors.py: exact class match).
_CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "int": {"QSpinBox", "QSlider"},
    "choice": {"QComboBox"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
    "str": {"QLineEdit", "QTextEdit"},
}


def _parameter_kinds() -> dict[str, str]:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "OpportunisticBMDParameterNode":
            kinds = {}
            for item in node.body:
                if not isinstance(item, ast.AnnAssign):
                    continue
                text = ast.unparse(item.annotation)
                if "Choice" in text:
                    kinds[item.target.id] = "choice"
                elif text.startswith("vtkMRML"):
                    kinds[item.target.id] = "node"
                else:
                    base = re.sub(r"^Annotated\[(\w+),.*$", r"\1", text)
                    kinds[item.target.id] = base
            return kinds
    raise AssertionError("no parameter node class")


def test_bound_widgets_have_a_gui_connector_for_their_parameter_type():
    kinds = _parameter_kinds()
    root = ET.parse(UI).getroot()
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.findtext("string")
                assert widget.get("class") in _CONNECTABLE[kinds[name]], (name, widget.get("class"), kinds[name])


def _within_ranges() -> dict[str, tuple[float, float]]:
    """Parameter field -> (low, high) of its ``WithinRange`` annotation."""
    tree = ast.parse(MODULE.read_text())
    ranges = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            for call in ast.walk(node.annotation):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "WithinRange":
                    ranges[node.target.id] = tuple(float(ast.literal_eval(a)) for a in call.args)
    return ranges


def test_spin_box_limits_match_the_parameter_ranges():
    """A spin box wider than its field's WithinRange would let the user type a value the node refuses;
    the composition fields' minimum is their 'typical for age' value (specialValueText)."""
    ranges = _within_ranges()
    root = ET.parse(UI).getroot()
    checked = 0
    for widget in root.iter("widget"):
        props = {p.get("name"): p for p in widget.findall("property")}
        if widget.get("class") != "QDoubleSpinBox" or "SlicerParameterName" not in props:
            continue
        name = props["SlicerParameterName"].findtext("string")
        limits = (float(props["minimum"].findtext("double")), float(props["maximum"].findtext("double")))
        assert limits == ranges[name], (name, limits, ranges[name])
        checked += 1
    assert checked >= 4  # phantom slope and intercept, psoas and marrow fat


def test_composition_fields_reach_the_calibration():
    from OpportunisticBMDLib.mrml.options import composition_params

    root = ET.parse(UI).getroot()
    typical = {w.get("name"): float(w.find("property[@name='minimum']").findtext("double"))
               for w in root.iter("widget") if w.get("name") in ("psoasFatSpinBox", "marrowFatSpinBox")}
    assert composition_params(typical["psoasFatSpinBox"], typical["marrowFatSpinBox"]) == {}  # "typical for age"
    assert composition_params(0.0, 5.0) == {"psoas_fat_fraction": 0.0, "marrow_fat_fraction": 0.05}
    assert composition_params(12.5, 62.0) == {"psoas_fat_fraction": 0.125, "marrow_fat_fraction": 0.62}
