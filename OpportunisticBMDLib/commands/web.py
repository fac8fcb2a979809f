"""``obmd web [CT]``: the review / edit / recompute workflow in a browser (trame-slicer), on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..calibration import CALIBRATIONS, cli_help
from ..settings import AnalysisOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "web",
        help="serve the analysis, ROI editing and recompute workflow in a browser (trame-slicer)",
        description="Serve the workflow in a browser. Without CT a generated digital patient is opened. "
        "Binds 127.0.0.1 only unless --host says otherwise.",
    )
    parser.add_argument("ct", nargs="?", help="CT file or DICOM folder (default: a generated digital patient)")
    parser.add_argument("--labels", help="label map on the CT grid (our schema or TotalSegmentator 'total'); "
                        "without it the models segment the CT")
    parser.add_argument("--phantom-seed", type=int, default=0, help="seed of the digital patient (default 0)")
    parser.add_argument("--phantom-region", default="torso", help="digital patient region (default torso)")
    parser.add_argument("--phantom-spacing", type=float, default=None,
                        help="digital patient voxel size in mm (default: the generator's)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port; default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1); the app has "
                        "no authentication: any other host exposes the patient's images to the network")
    parser.add_argument("--out", default="obmd-web-out", help="folder for saved reports (default ./obmd-web-out)")
    parser.add_argument("--dataset", help="nnU-Net v2 raw dataset folder for exported training cases "
                        "(default OUT/nnUNet_raw/Dataset901_OBMD)")
    parser.add_argument("--calibration", default=None, metavar="METHOD",
                        choices=[m.name for m in CALIBRATIONS.values() if not m.needs_phantom_line],
                        help="calibration method (default: the pipeline's): " + cli_help())
    parser.add_argument("--analyze", action=argparse.BooleanOptionalAction, default=None,
                        help="run the analysis once the server is up (default: yes for a digital patient, "
                        "no for a CT, whose segmentation may take minutes)")
    parser.set_defaults(func=run)


def exposure_warning(host: str) -> str | None:
    """The warning printed when the app is served beyond this machine (any non-loopback ``--host``)."""
    from ..web.origin import is_loopback

    if is_loopback(host):
        return None
    bar = "!" * 78
    return (f"{bar}\n"
            f"!! WARNING: obmd web is listening on {host}, not only on this machine (127.0.0.1).\n"
            "!! The app has NO AUTHENTICATION: anyone who can reach this port on the network can open it,\n"
            "!! read the patient's images and results, and run analyses. Use it only on a trusted network,\n"
            "!! or keep the default --host 127.0.0.1 and reach it through an SSH tunnel.\n"
            f"{bar}")


def run(args: argparse.Namespace) -> int:
    warning = exposure_warning(args.host)
    if warning:  # first, before the (slow) loading: nobody misses it
        print(warning, file=sys.stderr, flush=True)
    from ..web.offscreen import configure_offscreen_rendering

    configure_offscreen_rendering()  # before vtk is imported
    from trame.app import get_server

    from ..web.app import OBMDWebApp
    from ..web.cases import load_ct_case, load_phantom_case

    if args.ct:
        ct, labels, name = load_ct_case(args.ct, args.labels)
    else:
        ct, labels, name = load_phantom_case(args.phantom_seed, args.phantom_region, args.phantom_spacing)
    options = AnalysisOptions(calibration=args.calibration) if args.calibration else None
    server = get_server("obmd-web", client_type="vue3")
    app = OBMDWebApp(server, out_dir=Path(args.out), dataset_dir=Path(args.dataset) if args.dataset else None,
                     options=options, phantom_seed=args.phantom_seed, phantom_spacing_mm=args.phantom_spacing)
    app.workflow.load_volume(ct, name, labels)
    if args.analyze if args.analyze is not None else not args.ct:
        server.controller.on_server_ready.add(lambda **_: server.state.flush() or _schedule(app.workflow.analyze))
    print(f"obmd web: serving {name} on http://{args.host}:{args.port}/", flush=True)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # trame reads sys.argv itself: give it only what we decided (no browser opening, our host/port).
    sys.argv = [sys.argv[0], "--server"]
    server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=True)
    return 0


def _schedule(coroutine_function) -> None:
    asyncio.get_event_loop().create_task(coroutine_function())
