"""The one LightningModule: wraps any registered network with its loss, metrics and optimizer."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from seqcomp.errors import SeqcompError

LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.smooth_l1_loss}


class Forecaster(L.LightningModule):
    """Train with ``train/loss``; validate with ``val/mse`` and ``val/mae`` averaged over windows."""

    def __init__(self, net: torch.nn.Module, lr: float, weight_decay: float, loss: str = "mse"):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.loss_fn = LOSSES[loss]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.net(x).float(), y)
        if not torch.isfinite(loss):
            raise SeqcompError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                "lower the learning rate or enable grad_clip"
            )
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        pred = self.net(x).float()
        # Weighting each batch mean by its size makes the epoch value a mean over windows.
        self.log("val/mse", F.mse_loss(pred, y), on_epoch=True, batch_size=x.shape[0])
        self.log("val/mae", F.l1_loss(pred, y), on_epoch=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; parameters carrying an ``_optim`` dict (SSM recurrences) get their own group."""
        plain = [p for p in self.net.parameters() if p.requires_grad and not hasattr(p, "_optim")]
        groups = [{"params": plain}]
        special: dict[tuple, list] = {}
        for p in self.net.parameters():
            if p.requires_grad and hasattr(p, "_optim"):
                special.setdefault(tuple(sorted(p._optim.items())), []).append(p)
        groups += [{"params": ps, **dict(hp)} for hp, ps in special.items()]
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
