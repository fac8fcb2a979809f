"""``obmd train``: train or fine-tune the segmentation/keypoint model on synthetic data.

Sources: an nnU-Net v2 raw dataset (``--dataset``; labels in the library schema), phantoms from
``obmd phantom`` output folders (``--phantom-dir``) or generated on the fly (``--phantoms N``), and
the TotalSegmentator label maps of ``../shared/data`` as anatomy templates (``--shared-templates``), with
that CT's real HU as well (``--shared-real-image``: CPU fine-tuning on real intensities, see
docs/model-card.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train or fine-tune the segmentation model (CPU or GPU)",
                              description=__doc__)
    p.add_argument("--out", required=True, help="run folder: checkpoint/, log.csv, best.safetensors")
    p.add_argument("--dataset", action="append", default=[], help="nnU-Net v2 raw dataset folder (repeatable)")
    p.add_argument("--phantom-dir", action="append", default=[], help="folder of `obmd phantom` outputs")
    p.add_argument("--phantoms", type=int, default=0, help="generate N phantoms as templates")
    p.add_argument("--phantom-seed", type=int, default=5000, help="first phantom seed (benchmarks use 1000+)")
    p.add_argument("--phantom-weight", type=float, default=1.0, help="sampling weight of each phantom template")
    p.add_argument("--shared-templates", metavar="DIR", help="TotalSegmentator example folder as anatomy template")
    p.add_argument("--use-images", action="store_true", help="also train on the datasets' own (synthetic) images")
    p.add_argument("--shared-real-image", action="store_true",
                   help="with --shared-templates: also train on that CT's real HU (intensity-augmented: contrast, "
                        "gain/offset, thickness blur, noise, field-of-view cuts), mixed with synthetic intensities")
    p.add_argument("--real-image-fraction", type=float, default=0.5,
                   help="share of the shared CT's patches drawn from its real HU (default 0.5)")
    p.add_argument("--templates", action="append", default=[], metavar="BUNDLE",
                   help="template bundle (.npz) written by --save-templates (repeatable)")
    p.add_argument("--save-templates", metavar="BUNDLE",
                   help="write the prepared train/validation templates to this .npz and stop (for a GPU machine)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iters-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="safetensors to fine-tune from ('shipped' = the installed model)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this time")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda (network and patch synthesis)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--channels", help="U-Net channels per level, e.g. 16,32,64,128,256 (strides 2 each)")
    p.add_argument("--res-units", type=int, help="residual units per U-Net level")
    p.add_argument("--export", metavar="MODELS_DIR", help="after training, write best weights + manifest entry here")
    p.set_defaults(func=run)


def _phantom_variant(n: int) -> dict:
    """Cycle through fields of view and findings so a handful of phantoms covers the variants."""
    variants = [{"region": "torso"}, {"region": "spine", "contrast": True}, {"region": "hip", "metal": "left"},
                {"region": "torso", "fov_levels": ("T10", "L2")}, {"region": "torso", "contrast": True},
                {"region": "torso", "fracture": "L1"}, {"region": "hip"}, {"region": "torso", "metal": "right"}]
    return variants[n % len(variants)]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..models import templates as T
    from ..models.training import TrainConfig, Trainer, nnunet_templates, split_templates
    from ..models.weights import export_model, model_entry
    from ..progress import TerminalProgress

    if args.threads:
        torch.set_num_threads(args.threads)
    sources: list[T.Template] = []
    for d in args.dataset:
        sources += nnunet_templates(Path(d))
    for d in args.phantom_dir:
        for case in sorted(p for p in Path(d).iterdir() if (p / "labels.nii.gz").is_file()):
            sources.append(T.from_phantom_dir(case, use_image=args.use_images))
    for n in range(args.phantoms):
        sources.append(T.phantom_template(args.phantom_seed + n, use_image=args.use_images,
                                          weight=args.phantom_weight, **_phantom_variant(n)))
    train, val = split_templates(sources, args.val_fraction)
    if args.shared_templates:
        train = T.default_shared_templates(Path(args.shared_templates), use_image=args.shared_real_image,
                                           image_fraction=args.real_image_fraction) + train
    elif args.shared_real_image:
        raise InputError("--shared-real-image needs --shared-templates DIR")
    for bundle in args.templates:
        loaded = T.load_bundle(Path(bundle))
        train += [t for t in loaded if t.split == "train"]
        val += [t for t in loaded if t.split == "val"]
    val = val or train
    if args.save_templates:
        held_out = [t for t in val if not any(t is u for u in train)]
        for t in held_out:
            t.split = "val"
        unique = train + held_out
        path = T.save_bundle(unique, Path(args.save_templates))
        print(f"wrote {len(train)} training and {len(val)} validation templates to {path}")
        return 0
    if not train:
        raise InputError("no training data: give --dataset, --phantom-dir, --phantoms or --shared-templates")
    init, init_network = None, None
    if args.init == "shipped":
        from ..resources import models_dir

        shipped = model_entry()
        init, init_network = models_dir() / shipped["file"], shipped.get("network")
    elif args.init:
        init = Path(args.init)
    cfg = TrainConfig(out_dir=Path(args.out), epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
                      batch_size=args.batch_size, patch_size=args.patch_size, learning_rate=args.lr, seed=args.seed,
                      n_val_samples=args.val_samples, init_weights=init, resume=not args.no_resume,
                      max_minutes=args.max_minutes, device=args.device, amp=args.amp)
    if init_network:  # fine-tuning the shipped weights: their network, unless --channels says otherwise
        cfg.network = {**cfg.network, **init_network}
    if args.channels:
        channels = [int(c) for c in args.channels.split(",")]
        cfg.network = {**cfg.network, "channels": channels, "strides": [2] * (len(channels) - 1)}
    if args.res_units is not None:
        cfg.network = {**cfg.network, "num_res_units": args.res_units}
    print(f"training on {len(train)} template(s), validating on {len(val)}; run folder {cfg.out_dir}")
    metrics = Trainer(cfg, train, val).run(TerminalProgress())
    print(f"last epoch: train loss {metrics.get('train_loss', float('nan')):.3f}, "
          f"val Dice {metrics.get('val_dice_mean', float('nan')):.3f}; log: {cfg.out_dir / 'log.csv'}")
    if args.export:
        best = json.loads((cfg.out_dir / "best.json").read_text())
        entry = export_model(cfg.out_dir / "best.safetensors", Path(args.export), network=cfg.network,
                             training={"templates": [t.name for t in train], "iterations": metrics.get("iteration"),
                                       "patch_size": cfg.patch_size},
                             validation={"synthetic_val_dice_mean": best.get("val_dice_mean")})
        print(f"exported {entry['file']} (sha256 {entry['sha256'][:12]}…) to {args.export}")
    return 0
