"""Weights of models trained from nothing (the demo), and deepening a trained model: more transformer blocks, each
new one starting as the identity, so training goes on from what the model already does with more capacity."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .loading import init_tag_mlp_from_text_embedding
from .model import Block, WanModel

# The projections that write into a block's residual stream: zero makes the block the identity.
RESIDUAL_OUTPUTS = ("self_attn.o", "cross_attn.o", "ffn.2")


def init_weights(named_parameters) -> None:
    """Xavier linears, small modulation, zero biases; norm scales keep their ones."""
    for name, p in named_parameters:
        if p.ndim < 2 and "norm" in name:
            continue
        if "modulation" in name:
            nn.init.normal_(p, std=p.shape[-1] ** -0.5)
        elif p.ndim >= 2:
            nn.init.xavier_uniform_(p.view(p.shape[0], -1))
        else:
            nn.init.zeros_(p)


def init_from_scratch(model: WanModel) -> None:
    """A model trained from nothing: init_weights everywhere but the adapter, a zero head (first outputs are 0)."""
    init_weights((n, p) for n, p in model.named_parameters() if not n.startswith("alchemint."))
    nn.init.zeros_(model.head.head.weight)
    init_tag_mlp_from_text_embedding(model)


def spread(old: int, new: int) -> list[int]:
    """Where the old blocks go among `new`: evenly spaced, the first and last staying first and last."""
    if old == 1:
        return [0]
    return [round(i * (new - 1) / (old - 1)) for i in range(old)]


@torch.no_grad()
def deepen(model: WanModel, num_layers: int) -> WanModel:
    """Grow the model in place to num_layers blocks. The trained blocks keep their order, spread evenly; the new
    ones between them get fresh weights with zeroed residual outputs, so the deepened model computes exactly what
    it did before and the new blocks learn from the first step (their output projections get gradients)."""
    old = len(model.blocks)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < old:
        raise ValueError(f"deepen_to {num_layers!r} must be an integer >= the model's {old} blocks "
                         "(0 = keep the model as it is)")
    if num_layers == old:
        return model
    if model.alchemint is not None and model.alchemint.dense is not None:
        raise ValueError("deepen_to: the model has dense-caption branches (one per block); deepen it before they "
                         "are trained, or keep its depth")
    cfg = dataclasses.replace(model.cfg, num_layers=num_layers).validate()
    param = next(model.blocks[0].parameters())
    keep = dict(zip(spread(old, num_layers), model.blocks))
    blocks = []
    for i in range(num_layers):
        if i in keep:
            blocks.append(keep[i])
            continue
        block = Block(cfg)
        init_weights(block.named_parameters())
        for name in RESIDUAL_OUTPUTS:
            layer = block.get_submodule(name)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        blocks.append(block.to(device=param.device, dtype=param.dtype))
    model.blocks = nn.ModuleList(blocks)
    model.cfg = cfg
    return model
