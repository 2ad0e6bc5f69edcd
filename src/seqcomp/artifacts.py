"""Trained-model files: architecture + weights as plain tensors, never pickled modules.

Kept apart from the training code so that the compress and evaluate jobs load a model without
importing Lightning (seconds per job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqcomp.io import atomic_path
from seqcomp.models import SeriesShape, build_model


def save_model(net: torch.nn.Module, kind: str, params: dict[str, Any], shape: SeriesShape, path: Path) -> None:
    """Write what ``load_model`` needs; loadable with ``torch.load(weights_only=True)``."""
    payload = {
        "kind": kind,
        "params": params,
        "shape": {"lookback": shape.lookback, "horizon": shape.horizon, "channels": shape.channels},
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    save_torch(payload, path)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` into ``path`` atomically; a full disk raises ``seqcomp.io.DiskFull`` naming it.

    Saved by name, as always: torch names the archive's inner folder after the file, so saving
    into a file object would change every model.pt's size (report.json's ``file_bytes``). By
    name, torch's C++ writer reports a failed write without its cause ("basic_ios::clear:
    iostream error", "unexpected pos"), so such a failure is redone through a Python file, whose
    OSError carries errno ENOSPC/EDQUOT when the disk is full (``atomic_path`` then says so).
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
            raise  # the second save fit: the first failed for another reason, shown as it was


def model_spec(path: str | Path) -> dict[str, Any]:
    """The part of the job spec saved with a trained model: kind, params (``cycle`` included),
    lookback and horizon; enough for :func:`seqcomp.data.windows.job_windows`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return {"kind": payload["kind"], "params": payload["params"], **payload["shape"]}


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild a trained model saved by ``save_model`` (fp32, eval mode, CPU)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model(payload["kind"], payload["params"], SeriesShape(**payload["shape"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()
