"""``obmd bench recompute``: how long the Slicer/browser Logic takes on a headless MRML scene.

Times, on one CT with its labels: building the scene, Analyze (labels given, so no models),
Recompute after an edit of the muscle ROI (what a user waits for after each edit), and exporting a
training case. Default input: a digital patient (``obmd phantom``); ``--ct``/``--seg`` for a real CT.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .common import add_json_option, peak_rss_mb, write_json


def register(bench_subparsers: argparse._SubParsersAction) -> None:
    parser = bench_subparsers.add_parser("recompute", help="Logic timings on a headless MRML scene (needs slicer-core)")
    parser.add_argument("--ct", help="CT file (default: a digital patient)")
    parser.add_argument("--seg", help="label map for --ct (our schema or TotalSegmentator total)")
    parser.add_argument("--seed", type=int, default=0, help="digital patient seed (default 0)")
    parser.add_argument("--repeats", type=int, default=5, help="Recompute repetitions (default 5)")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..mrml import segments
    from ..mrml.digital_patient import load_digital_patient
    from ..mrml.logic import BMDLogic
    from ..mrml.scene import create_headless_scene, load_volume
    from ..mrml.volumes import volume_from_node

    figures: dict = {}
    t0 = time.perf_counter()
    create_headless_scene()
    figures["scene_setup_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="obmd-bench-") as tmp:
        t0 = time.perf_counter()
        if args.ct:
            volume_node = load_volume(args.ct, name="ct")
            seg_node = load_volume(args.seg, name="labels", labelmap=True) if args.seg else None
            figures["input"] = str(Path(args.ct).name)
        else:
            volume_node, seg_node = load_digital_patient(seed=args.seed, work_dir=Path(tmp) / "phantom")
            figures["input"] = f"digital patient seed {args.seed}"
        figures["load_s"] = time.perf_counter() - t0
        ct = volume_from_node(volume_node)
        figures["grid"] = list(ct.shape)
        logic = BMDLogic()
        t0 = time.perf_counter()
        outputs = logic.analyze(volume_node, seg_node)
        figures["analyze_with_labels_s"] = time.perf_counter() - t0
        roi_node = outputs.roi_segmentation_node
        muscle = segments.segmentation_to_rois(roi_node, volume_node, ct)["muscle_roi"]
        times = []
        for repeat in range(args.repeats):
            # Each round: one edit (drop a slab of the muscle ROI), then Recompute as the user would.
            edited = muscle.copy()
            edited[: (repeat + 1) * muscle.shape[0] // (2 * args.repeats + 2)] = False
            segments.edit_segment_voxels(roi_node, "muscle_roi", edited, ct, volume_node)
            t0 = time.perf_counter()
            logic.recompute(volume_node, roi_node, table_node=outputs.table_node)
            times.append(time.perf_counter() - t0)
        figures["recompute_s_median"] = statistics.median(times)
        figures["recompute_s_max"] = max(times)
        if seg_node is not None:
            t0 = time.perf_counter()
            logic.export_training_case(volume_node, seg_node, Path(tmp) / "Dataset501_OBMD")
            figures["export_training_case_s"] = time.perf_counter() - t0
    figures["peak_rss_mb"] = peak_rss_mb()
    for key, value in figures.items():
        print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    write_json(args.json, figures)
    return 0
