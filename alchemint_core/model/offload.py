"""Block offloading: transformer blocks' weights stay in storage (CPU RAM, pinned for CUDA) and each block's weights
are put on the compute device only for its own forward pass, so a model larger than the device's memory runs
(Wan 2.1 14B holds 28 GB of weights in bf16; with offloading a 24 GB card keeps about two blocks' worth, ~1.4 GB).

On CUDA the next block is copied on a side stream while the current one computes. Inference only: the device
copies are dropped after use, never written back.
"""
from __future__ import annotations

import torch
from torch import nn


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    named = dict(module.named_parameters(recurse=True))
    named.update({k: v for k, v in module.named_buffers(recurse=True) if v is not None})
    return named


def _assign(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner) if owner else module
        if leaf in sub._parameters:
            sub._parameters[leaf] = nn.Parameter(t, requires_grad=False)
        else:
            sub._buffers[leaf] = t


class BlockOffload:
    """Attach to a model's blocks (a ModuleList) with `BlockOffload(model.blocks, device)`; `remove()` puts every
    block back on the compute device."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device | str):
        self.blocks, self.device = blocks, torch.device(device)
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.store: list[dict[str, torch.Tensor]] = []
        for block in blocks:
            stored = {k: v.detach().to("cpu") for k, v in _tensors(block).items()}
            if cuda:
                stored = {k: v.pin_memory() for k, v in stored.items()}
            self.store.append(stored)
            self._release(block, stored)
        self.ready: dict[int, tuple[dict[str, torch.Tensor], object]] = {}
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(lambda m, args, i=i: self._enter(i)))
            self.handles.append(block.register_forward_hook(lambda m, args, out, i=i: self._exit(i)))

    @staticmethod
    def _release(block: nn.Module, stored: dict[str, torch.Tensor]) -> None:
        _assign(block, {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in stored.items()})

    def _copy(self, i: int):
        """Start copying block i's weights to the device; returns (tensors, event to wait for or None)."""
        if self.stream is None:
            return {k: v.to(self.device, copy=True) for k, v in self.store[i].items()}, None
        with torch.cuda.stream(self.stream):
            tensors = {k: v.to(self.device, non_blocking=True) for k, v in self.store[i].items()}
            event = torch.cuda.Event()
            event.record(self.stream)
        return tensors, event

    def _enter(self, i: int) -> None:
        tensors, event = self.ready.pop(i, None) or self._copy(i)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        _assign(self.blocks[i], tensors)
        nxt = (i + 1) % len(self.blocks)
        if self.stream is not None and nxt not in self.ready and nxt != i:  # prefetch while block i computes
            self.ready[nxt] = self._copy(nxt)

    def _exit(self, i: int) -> None:
        self._release(self.blocks[i], self.store[i])

    def resident(self) -> list[int]:
        """Indices of blocks whose weights are on the compute device now."""
        return [i for i, b in enumerate(self.blocks) if next(b.parameters()).device.type != "meta"]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for block, stored in zip(self.blocks, self.store):
            _assign(block, {k: v.to(self.device) for k, v in stored.items()})
        self.ready.clear()
