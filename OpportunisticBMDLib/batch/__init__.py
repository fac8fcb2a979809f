"""``obmd batch``: many CTs analysed as ``obmd analyze`` would, on Dask, resumable, one cohort report.

``inputs`` finds the cases (image folders, DICOM trees, a CSV manifest), ``case`` runs one (isolated,
time-limited, errors recorded), ``resume`` says whether a case's complete output exists already,
``engine`` spreads the cases over Dask workers, ``cohort`` writes the cohort tables and figure.
Qt-free: no slicer, qt or vtk.
"""

# Per-case time limit. Design choice: the model path takes ~1-2 min on a 512x512x300 CT on one CPU thread
# (obmd bench speed); 30 min is far beyond any healthy case and still bounds a stuck one.
DEFAULT_TIME_LIMIT_S = 1800.0
