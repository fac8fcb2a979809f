"""The browser app (``obmd web``): the module's workflow served with trame-slicer.

Small modules, one job each:

- :mod:`.offscreen` picks VTK's EGL window before vtk loads (no X display on servers / CI).
- :mod:`.results_view` turns ``results.json`` into the rows the page shows (pure, no trame).
- :mod:`.workflow` drives :class:`..mrml.logic.BMDLogic` on trame-slicer's MRML scene (load, analyze in a
  worker thread, recompute, save report, export training case, focus a segment).
- :mod:`.ui` lays the page out; :mod:`.app` wires trame-slicer's views and segment editor to the workflow.
"""
