"""OpportunisticBMD: opportunistic bone mineral density from routine CT.

Algorithm modules here import neither slicer, qt nor vtk; only the :mod:`.mrml` package and the web
app do. Array orientation convention: see :mod:`.volume`.
"""

__version__ = "0.1.0"
