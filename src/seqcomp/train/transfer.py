"""Transfer of a pre-trained model to a target: its weights into the target's shape, the head
to tune, the few-shot windows.

A model is pre-trained channel-independent (one channel per sample, seqcomp.train.pretrain) at
its context and the pre-training horizon. On a target of C channels and horizon h <= that
horizon, every pre-trained tensor goes into the model built for (context, h, C) by one rule of
:func:`adapt_plan`, or the transfer is refused naming the tensor: the same shape is copied; a
tensor whose first axis is the pre-training horizon keeps its first h rows (the first h steps
of the forecast: TTM's ``prediction_filter_length``); a per-channel tensor of one channel
(RevIN's affine map) is repeated over the C channels. Tensors the pre-trained model does not
have (a channel-mixing decoder switched on for fine-tuning) keep their fresh initialisation,
and run.json lists them.

Fine-tuning never leaves a transferred model worse on val than it started: the pre-trained
weights are scored on the target's val split before the fit, and kept if no epoch beats them
(:class:`Start`; run.json says which).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqcomp.data.windows import WindowDataset
from seqcomp.errors import SeqcompError

Shapes = dict[str, tuple[int, ...]]


def adapt_plan(pretrained: Shapes, target: Shapes, pretrain_horizon: int, horizon: int, channels: int) -> dict[str, str]:
    """tensor name -> how it is filled: ``copy``, ``rows`` (the first ``horizon`` rows), ``channels``
    (a one-channel tensor repeated) or ``new`` (fresh). Raises ValueError naming a tensor that
    fits none of these, or a pre-trained one the target model has no place for."""
    unused = sorted(set(pretrained) - set(target))
    if unused:
        raise ValueError(f"the target model has no tensor {unused[0]!r} of the pre-trained one")
    plan = {}
    for name, shape in target.items():
        source = pretrained.get(name)
        if source is None:
            plan[name] = "new"
        elif source == shape:
            plan[name] = "copy"
        elif source[0] == pretrain_horizon and shape[0] == horizon < pretrain_horizon and source[1:] == shape[1:]:
            plan[name] = "rows"
        elif len(source) == len(shape) and all(a == b or (a == 1 and b == channels) for a, b in zip(source, shape)):
            plan[name] = "channels"
        else:
            raise ValueError(f"tensor {name!r} has shape {list(source)} pre-trained and {list(shape)} here: the "
                             "model's weights depend on the channel count or the context (it is not channel-independent)")
    return plan


def load_pretrained(net: nn.Module, path: str | Path, spec: dict[str, Any], channels: int) -> dict[str, Any]:
    """Fill ``net`` (built for the target's ``channels``) with the pre-trained weights at ``path`` (a pretrain
    job's model.pt); returns what was done, for run.json."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["kind"] != spec["kind"]:
        raise SeqcompError(f"{path}: a pre-trained {payload['kind']}, not a {spec['kind']}")
    if payload["shape"]["lookback"] != spec["lookback"]:
        raise SeqcompError(f"{path}: pre-trained at context {payload['shape']['lookback']}, not {spec['lookback']}")
    state, own = payload["state_dict"], net.state_dict()
    plan = adapt_plan({k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in own.items()},
                      payload["shape"]["horizon"], spec["horizon"], channels)
    filled = {}
    for name, how in plan.items():
        if how == "copy":
            filled[name] = state[name]
        elif how == "rows":
            filled[name] = state[name][: own[name].shape[0]]
        elif how == "channels":
            filled[name] = state[name].expand(own[name].shape).clone()
        else:
            filled[name] = own[name]
    net.load_state_dict(filled)
    return {"pretrained_from": str(path), "pretrain_horizon": payload["shape"]["horizon"],
            **{f"weights_{how}": sorted(n for n, h in plan.items() if h == how) for how in ("rows", "channels", "new")}}


def tune_head_only(net: nn.Module) -> list[str]:
    """Freeze every weight but those of the model's ``transfer_head`` modules; returns their names.

    A model declares its head (``transfer_head``: attribute names of its submodules): TTM its
    decoder and forecast head, the parts its own fine-tuning trains with the backbone frozen.
    """
    core = next((m for m in net.modules() if hasattr(m, "transfer_head")), None)
    if core is None:
        raise SeqcompError(f"{type(net).__name__} declares no transfer_head: it cannot be tuned head-only")
    for p in net.parameters():
        p.requires_grad_(False)
    for name in core.transfer_head:
        for p in getattr(core, name).parameters():
            p.requires_grad_(True)
    return list(core.transfer_head)


def few_shot_windows(windows: WindowDataset, fraction: float, which: str) -> WindowDataset:
    """The first or last ``fraction`` of the train windows (rounded down), in time order."""
    keep = few_shot_count(len(windows), fraction)
    starts = windows.starts[:keep] if which == "first" else windows.starts[len(windows.starts) - keep:]
    return WindowDataset(windows.values, starts, windows.lookback, windows.horizon, inputs=windows.inputs)


def few_shot_count(n_windows: int, fraction: float) -> int:
    """Windows a fraction keeps: rounded down, as Time-Series-Library's and TTM's few-shot loaders do."""
    return int(n_windows * fraction)


@dataclass
class Start:
    """A fine-tuning job's pre-trained weights (in the target's shape) and their val scores,
    taken before the fit. Early stopping picks the best fine-tuning epoch; this compares it with
    epoch 0, the weights as transferred, which a small fraction can make worse (it overfits)."""

    state: dict[str, torch.Tensor]
    val: dict[str, float]

    @classmethod
    def of(cls, net: nn.Module, val_windows: Any, task: str) -> "Start":
        """Scored in eval mode, then put back in the mode it was in: Lightning fits modules in
        the mode it finds them, so a net left in eval mode would fine-tune without dropout."""
        from seqcomp.scores import HEADLINE, scores

        training = net.training
        val = scores(net.eval(), val_windows, task)
        net.train(training)
        return cls({k: v.detach().clone() for k, v in net.state_dict().items()}, {k: val[k] for k in HEADLINE[task]})

    def keep_the_better(self, trained: Any) -> dict[str, Any]:
        """Put the start back into ``trained`` (seqcomp.train.core.Trained: its net and val
        scores) if its val MSE is no worse than the fine-tuned one; run.json's record of it."""
        kept = self.val["mse"] <= trained.val["mse"]
        notes = {"pretrained_val_mse": self.val["mse"], "fine_tuned_val_mse": trained.val["mse"],
                 "kept_pretrained_weights": kept}
        if kept:
            trained.net.load_state_dict(self.state)
            trained.val = dict(self.val)
            logging.getLogger("seqcomp.train").info(
                "kept the pre-trained weights: val MSE %.4g before fine-tuning, %.4g at its best epoch",
                self.val["mse"], notes["fine_tuned_val_mse"])
        return notes
