"""MRML nodes (3D Slicer or slicer-core) <-> the library's plain objects, and the Logic the Slicer module
and the browser app share. The only part of the library that imports slicer (with :mod:`..web`); each
module has one job:

- :mod:`.scene`: a headless scene from slicer-core (tests, browser app) and file IO through storage nodes
- :mod:`.volumes`: volume nodes <-> :class:`..volume.Volume` (geometry, CT header attributes)
- :mod:`.segment_names`: segment display names, colors, terminology (no slicer import)
- :mod:`.segment_arrays`: a segment's voxels read and written as numpy arrays
- :mod:`.edits`: the one edit-detection mechanism (voxel digests, ``OBMD.*`` segment tags)
- :mod:`.segments`: ROI masks <-> a ROI segmentation
- :mod:`.labelmaps`: label maps of our schema <-> a label segmentation
- :mod:`.tables`: results.json <-> table nodes
- :mod:`.markups`: keypoints <-> a point list
- :mod:`.hierarchy`: output nodes placed next to their CT in the subject hierarchy
- :mod:`.options`: analysis options from the panels (no slicer import)
- :mod:`.logic`: :class:`.logic.BMDLogic`, Analyze / Recompute / report / export on scene nodes
- :mod:`.recompute`: Recompute's MRML-free measuring step (:class:`.recompute.RecomputeJob`)
- :mod:`.nnunet_export`: a corrected case into an nnU-Net v2 raw dataset (no slicer import)
- :mod:`.process`: a background child process with a progress stream and a process-tree kill (no slicer)
- :mod:`.background_job`: ``obmd analyze`` run as such a process (:class:`.background_job.AnalysisJob`)
- :mod:`.dependencies`: which required Python packages are missing
- :mod:`.digital_patient`: a digital patient put into the scene
- :mod:`.self_test`: the module's self-test, runnable headless

Nothing is imported here, so that the slicer-free modules import without slicer.
"""
