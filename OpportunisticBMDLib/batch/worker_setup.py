"""The Dask worker plugin of ``obmd batch`` (imports distributed: loaded only when a batch runs)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class CaseWorkerSetup(WorkerPlugin):
    """One thread per task thread for torch and SimpleITK (the nanny sets OMP/MKL/OpenBLAS to one thread
    already); the segmentation model loaded once per worker process when any case needs it."""

    name = "obmd-case-setup"

    def __init__(self, model_device: str | None) -> None:
        self.model_device = model_device  # None: no case needs the models

    def setup(self, worker) -> None:
        import SimpleITK as sitk
        import torch

        torch.set_num_threads(1)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        if self.model_device is not None:
            from ..models.inference import warm_up

            warm_up(self.model_device)
