"""Forecast error (or classification accuracy) over every window of a split: the one definition
of a score, used by training (validation scores, the lookback choice) and evaluation (test).

A module of its own, not the evaluation stage's: training imports it, and an edit of the
evaluation stage must not rerun training (seqcomp.stamps).

Errors are accumulated as sums over windows and divided once at the end, so they do not
depend on the batch size and no window is dropped (Time-Series-Library's old test loader
dropped the last batch, i.e. the most recent windows; see PITFALLS.md section 1).
Classification tasks (generated token tasks) are scored the same way, over every sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def forecast_errors(model: torch.nn.Module, windows: Dataset, batch_size: int = 256, device: str = "cpu") -> dict:
    """MSE and MAE averaged over all windows, horizon steps and channels; plus per-step MSE."""
    model.eval()
    sq_sum = abs_sum = None
    n = 0
    for x, y in DataLoader(windows, batch_size=batch_size, shuffle=False, drop_last=False):
        pred = model(x.to(device)).float().cpu()  # (B, H, C)
        err = pred - y
        sq = (err**2).sum(dim=(0, 2), dtype=torch.float64)  # (H,)
        ab = err.abs().sum(dim=(0, 2), dtype=torch.float64)
        sq_sum = sq if sq_sum is None else sq_sum + sq
        abs_sum = ab if abs_sum is None else abs_sum + ab
        n += x.shape[0]
    if n == 0:
        raise ValueError("no windows to evaluate")
    channels = windows[0][1].shape[1]
    per_step = sq_sum / (n * channels)  # (H,)
    return {
        "mse": float(per_step.mean()),
        "mae": float((abs_sum / (n * channels)).mean()),
        "n_windows": n,
        "mse_per_step": per_step.tolist(),
    }


@torch.no_grad()
def classification_scores(model: torch.nn.Module, samples: Dataset, batch_size: int = 256, device: str = "cpu") -> dict:
    """Accuracy per target token and per sample (all H tokens right), cross-entropy, and
    accuracy per target position; the model emits logits (B, H, vocab)."""
    model.eval()
    correct = None
    ce_sum, whole, n = 0.0, 0, 0
    for x, y in DataLoader(samples, batch_size=batch_size, shuffle=False, drop_last=False):
        logits = model(x.to(device)).float().cpu()  # (B, H, V)
        hit = logits.argmax(-1) == y  # (B, H)
        correct = hit.sum(0, dtype=torch.float64) if correct is None else correct + hit.sum(0, dtype=torch.float64)
        whole += int(hit.all(-1).sum())
        ce_sum += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
        n += x.shape[0]
    if n == 0:
        raise ValueError("no samples to evaluate")
    per_step = correct / n  # (H,)
    return {
        "accuracy": float(per_step.mean()),
        "seq_accuracy": whole / n,
        "ce": ce_sum / (n * len(per_step)),
        "n_samples": n,
        "accuracy_per_step": per_step.tolist(),
    }


# The scores each task is judged by: logged as best_val/<key> and test/<key>.
HEADLINE = {"forecast": ("mse", "mae"), "classification": ("accuracy", "seq_accuracy")}


def scores(model: torch.nn.Module, data: Dataset, task: str, batch_size: int = 256) -> dict:
    """``forecast_errors`` or ``classification_scores``, by the dataset's task."""
    score = classification_scores if task == "classification" else forecast_errors
    return score(model, data, batch_size=batch_size)
