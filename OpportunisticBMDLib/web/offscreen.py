"""Offscreen rendering choice, made before ``vtk`` is imported."""

from __future__ import annotations

import os


def configure_offscreen_rendering() -> str:
    """Use VTK's EGL render window when there is no X display (servers, CI: Mesa EGL renders on the CPU).

    VTK's wheels otherwise try an X window and log "bad X server connection". Returns the window class
    chosen ("" when left to VTK). A value already in the environment is kept.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", "")
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    return os.environ["VTK_DEFAULT_OPENGL_WINDOW"]
