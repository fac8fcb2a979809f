"""Training loop: synthetic patches from templates, Dice+CE and heatmap loss, validation, resume.

Checkpoints are safetensors + JSON (no pickle): ``<out>/checkpoint/{model,optimizer}.safetensors``
and ``state.json``; the best model by validation Dice is ``<out>/best.safetensors``; the per-epoch
log is ``<out>/log.csv``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..progress import Progress, no_progress
from .classes import N_CLASSES, NET_CLASSES
from .network import DEFAULT_CONFIG, build_network, split_output
from .synth import synth_sample
from .templates import Template

HEAT_WEIGHT = 5.0  # heatmap MSE is small next to Dice+CE; weight chosen so both decrease together


@dataclass
class TrainConfig:
    out_dir: Path
    epochs: int = 10
    iters_per_epoch: int = 100
    batch_size: int = 2
    patch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    n_val_samples: int = 8
    network: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    init_weights: Path | None = None  # fine-tune from these safetensors
    resume: bool = True
    max_minutes: float | None = None
    device: str = "cpu"  # "cuda": network and patch synthesis on the GPU
    amp: bool = False  # bfloat16 autocast on CUDA


def nnunet_templates(dataset_dir: Path) -> list[Template]:
    """Templates from an nnU-Net v2 raw dataset (``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``)."""
    from .templates import from_nnunet_case

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset.json").is_file() or not (dataset_dir / "labelsTr").is_dir():
        raise InputError(f"{dataset_dir}: not an nnU-Net raw dataset (needs dataset.json, imagesTr/, labelsTr/)")
    out = []
    for label_path in sorted((dataset_dir / "labelsTr").glob("*.nii*")):
        case = label_path.name.split(".")[0]
        image_path = next(iter(sorted((dataset_dir / "imagesTr").glob(f"{case}_0000.*"))), None)
        if image_path is None:
            raise InputError(f"{dataset_dir}: imagesTr/{case}_0000.* missing for labelsTr/{label_path.name}")
        out.append(from_nnunet_case(image_path, label_path))
    return out


def split_templates(templates: list[Template], val_fraction: float = 0.2) -> tuple[list[Template], list[Template]]:
    """Hold out the last ``val_fraction`` of templates for validation (at least one when there are 2+)."""
    if len(templates) < 2:
        # one template: validation on unseen random augmentations of it (two lists: bundles are appended)
        return templates, list(templates)
    n_val = max(1, int(round(len(templates) * val_fraction)))
    return templates[:-n_val], templates[-n_val:]


def _batch(templates: list[Template], cfg: TrainConfig, rng: np.random.Generator):
    xs, ys, hs = [], [], []
    for _ in range(cfg.batch_size):
        weights = np.asarray([t.weight for t in templates], float)
        tpl = templates[rng.choice(len(templates), p=weights / weights.sum())]
        x, y, h = synth_sample(tpl, cfg.patch_size, rng, device=cfg.device)
        xs.append(x)
        ys.append(y[None])
        hs.append(h)
    return torch.stack(xs), torch.stack(ys), torch.stack(hs)


def dice_per_class(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Dice of every class over a batch (NaN where a class is absent from both)."""
    out = np.full(N_CLASSES, np.nan)
    for c in range(N_CLASSES):
        p, t = pred == c, target == c
        denom = int(p.sum() + t.sum())
        if denom:
            out[c] = 2.0 * int((p & t).sum()) / denom
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, train: list[Template], val: list[Template]):
        self.cfg = cfg
        self.train_templates, self.val_templates = train, val
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.net = build_network(cfg.network).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.learning_rate, weight_decay=1e-5)
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
        self.epoch, self.iteration, self.best_dice = 0, 0, -1.0
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.init_weights:
            self.net.load_state_dict({k: v.float() for k, v in load_file(str(cfg.init_weights)).items()})
        if cfg.resume and (self.out / "checkpoint" / "state.json").is_file():
            self._load_checkpoint()
        val_rng = np.random.default_rng(10_000 + cfg.seed)
        val_cfg = TrainConfig(out_dir=self.out, batch_size=1, patch_size=cfg.patch_size, device=cfg.device)
        self.val_batches = [_batch(val, val_cfg, val_rng) for _ in range(cfg.n_val_samples)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.amp and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.net(x).float()  # type: ignore[no-any-return]
        return self.net(x)  # type: ignore[no-any-return]

    def loss(self, x: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        logits, heat_logit = split_output(self._forward(x))
        heat = torch.sigmoid(heat_logit)
        heat_loss = ((heat - h) ** 2 * (1 + 20 * h)).mean()
        return self.seg_loss(logits, y) + HEAT_WEIGHT * heat_loss  # type: ignore[no-any-return]

    def validate(self) -> dict[str, float]:
        self.net.eval()
        dices, losses = [], []
        with torch.no_grad():
            for x, y, h in self.val_batches:
                losses.append(float(self.loss(x, y, h)))
                logits, _ = split_output(self._forward(x))
                dices.append(dice_per_class(logits.argmax(1).cpu(), y[:, 0].cpu()))
        self.net.train()
        per_class = np.nanmean(np.asarray(dices), axis=0)
        out = {"val_loss": float(np.mean(losses)), "val_dice_mean": float(np.nanmean(per_class[1:]))}
        out.update({f"dice_{NET_CLASSES[c]}": float(per_class[c]) for c in range(1, N_CLASSES)})
        return out

    def run(self, progress: Progress = no_progress) -> dict[str, float]:
        rng = np.random.default_rng(self.cfg.seed + 7919 * self.iteration)
        start = time.time()
        metrics: dict[str, float] = {}
        self.net.train()
        while self.epoch < self.cfg.epochs:
            t0, losses = time.time(), []
            # cosine decay over the planned epochs, floor 5 % of the base rate
            lr = self.cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * self.epoch / self.cfg.epochs)))
            for group in self.opt.param_groups:
                group["lr"] = float(lr)
            for _ in range(self.cfg.iters_per_epoch):
                x, y, h = _batch(self.train_templates, self.cfg, rng)
                loss = self.loss(x, y, h)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                losses.append(loss.item())
                self.iteration += 1
            self.epoch += 1
            metrics = {"epoch": self.epoch, "iteration": self.iteration, "train_loss": float(np.mean(losses)),
                       **self.validate(), "seconds": time.time() - t0}
            self._log(metrics)
            if metrics["val_dice_mean"] > self.best_dice:
                self.best_dice = metrics["val_dice_mean"]
                save_file(self._cpu_state(), str(self.out / "best.safetensors"))
                (self.out / "best.json").write_text(json.dumps(metrics, indent=2))
            self._save_checkpoint()
            progress(self.epoch / self.cfg.epochs, f"epoch {self.epoch}: loss {metrics['train_loss']:.3f} "
                     f"val Dice {metrics['val_dice_mean']:.3f}")
            if self.cfg.max_minutes and (time.time() - start) / 60 > self.cfg.max_minutes:
                break
        return metrics

    def _cpu_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}

    def _log(self, metrics: dict[str, float]) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(metrics))
            if new:
                writer.writeheader()
            writer.writerow(metrics)

    def _save_checkpoint(self) -> None:
        ck = self.out / "checkpoint"
        ck.mkdir(exist_ok=True)
        save_file(self._cpu_state(), str(ck / "model.safetensors"))
        opt_state = self.opt.state_dict()
        tensors = {f"{pid}.{key}": val.detach().cpu().contiguous() for pid, st in opt_state["state"].items()
                   for key, val in st.items() if torch.is_tensor(val)}
        save_file(tensors, str(ck / "optimizer.safetensors"))
        state = {"epoch": self.epoch, "iteration": self.iteration, "best_dice": self.best_dice,
                 "param_groups": opt_state["param_groups"],
                 "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()}}
        (ck / "state.json").write_text(json.dumps(state, indent=2))

    def _load_checkpoint(self) -> None:
        ck = self.out / "checkpoint"
        state = json.loads((ck / "state.json").read_text())
        self.net.load_state_dict(load_file(str(ck / "model.safetensors"), device=str(self.device)))
        tensors = load_file(str(ck / "optimizer.safetensors"))  # Adam keeps "step" on the CPU
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, val in tensors.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = val
        self.opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        self.epoch, self.iteration, self.best_dice = state["epoch"], state["iteration"], state["best_dice"]
