"""Where output nodes sit in the subject hierarchy: next to the CT they were made from."""

from __future__ import annotations

from typing import Any

import slicer


def place_in_study(input_node: Any, *output_nodes: Any) -> None:
    """Put output nodes next to the input volume in the subject hierarchy (under its study)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(input_node.GetScene())
    if sh is None:
        return
    input_item = sh.GetItemByDataNode(input_node)
    if not input_item:
        return
    parent = sh.GetItemParent(input_item)
    for node in output_nodes:
        if node is None:
            continue
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:  # desktop Slicer adds an item per node; a bare scene may not have made one yet
            sh.CreateItem(parent, node)
