"""Weights of models trained from nothing (the demo), and growing a trained model so training goes on from what it
already does: deepening (more transformer blocks, each new one starting as the identity) and finer patches (more
tokens per latent frame, the patch embedding and head split from the trained ones)."""
from __future__ import annotations

import dataclasses

import torch
from einops import rearrange, reduce
from torch import nn

from .loading import init_tag_mlp_from_text_embedding
from .transformer import Block, WanModel

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


@torch.no_grad()
def refine_patches(model: WanModel, patch_size) -> WanModel:
    """Re-patchify the model in place to a finer patch size that divides the old one (e.g. [1, 2, 2] -> [1, 1, 1]:
    4x the tokens). The new embedding sums the old kernel over each old patch's sub-cells, so a token of a region
    that is uniform across an old patch embeds as the old token did; the new head predicts for each cell the mean
    of what the old head predicted for the cells of its old patch. The blocks are unchanged; RoPE positions count
    the new tokens (the spatial relative distances double), which training adapts to."""
    old = tuple(model.cfg.patch_size)
    new = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else None
    if (new is None or len(new) != 3 or not all(isinstance(q, int) and not isinstance(q, bool) and q >= 1
                                                 for q in new) or any(o % q for o, q in zip(old, new))):
        raise ValueError(f"patch_to {patch_size!r} must be three integers >= 1 that divide the model's patch size "
                         f"{list(old)}, e.g. [1, 1, 1] (empty = keep the patch size)")
    if new == old:
        return model
    (ft, fh, fw) = (o // q for o, q in zip(old, new))
    cfg = dataclasses.replace(model.cfg, patch_size=new).validate()
    conv, head = model.patch_embedding, model.head.head
    device = conv.weight.device  # new layers are fp32: mode 'full' trains them in fp32 anyway
    weight = reduce(conv.weight.float(), "d c (pt ft) (ph fh) (pw fw) -> d c pt ph pw", "sum", ft=ft, fh=fh, fw=fw)
    embedding = type(conv)(cfg.in_dim, cfg.dim, kernel_size=new, stride=new).to(device, torch.float32)
    embedding.weight.copy_(weight)
    embedding.bias.copy_(conv.bias)
    head_weight = head.weight.float() * (1 if head.weight_scale is None else head.weight_scale.float())  # scaled fp8
    # old rows are ordered (pf ph pw c) over the old patch's cells; each new cell's row is the mean of its old cells
    w = rearrange(head_weight, "(pt ft ph fh pw fw c) d -> pt ph pw c (ft fh fw) d", pt=new[0], ph=new[1], pw=new[2],
                  ft=ft, fh=fh, fw=fw).mean(-2)
    b = rearrange(head.bias.float(), "(pt ft ph fh pw fw c) -> pt ph pw c (ft fh fw)", pt=new[0], ph=new[1], pw=new[2],
                  ft=ft, fh=fh, fw=fw).mean(-1)
    out = type(head)(cfg.dim, cfg.out_dim * new[0] * new[1] * new[2]).to(device, torch.float32)
    out.weight.copy_(rearrange(w, "pt ph pw c d -> (pt ph pw c) d"))
    out.bias.copy_(b.flatten())
    model.patch_embedding, model.head.head, model.cfg = embedding, out, cfg
    model._video_tables = {}
    return model


@torch.no_grad()
def move_to_latents(model: WanModel, in_dim: int, patch_size, prediction: str) -> WanModel:
    """Put a trained model onto another latent space in place (another VAE: other channels, another patch size,
    another prediction target): a new patch embedding (Xavier) and a zero head, so the first outputs are the
    latents' mean (x prediction) or no velocity; the blocks, text, time and reference paths keep what they learned
    about timing, words and layout. References go through the new patch embedding like the video."""
    patch = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else None
    if (not isinstance(in_dim, int) or isinstance(in_dim, bool) or in_dim < 1 or patch is None or len(patch) != 3
            or not all(isinstance(q, int) and not isinstance(q, bool) and q >= 1 for q in patch)):
        raise ValueError(f"latent_to: in_dim {in_dim!r} must be an integer >= 1 and patch_size {patch_size!r} three "
                         "integers >= 1, e.g. {in_dim = 768, patch_size = [1, 1, 1], prediction = 'x'}")
    cfg = dataclasses.replace(model.cfg, in_dim=in_dim, out_dim=in_dim, patch_size=patch,
                              prediction=prediction).validate()
    device = model.patch_embedding.weight.device
    embedding = type(model.patch_embedding)(in_dim, cfg.dim, kernel_size=patch, stride=patch)
    init_weights(embedding.named_parameters())
    head = type(model.head.head)(cfg.dim, in_dim * patch[0] * patch[1] * patch[2])
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model.patch_embedding, model.head.head = embedding.to(device, torch.float32), head.to(device, torch.float32)
    model.cfg = cfg
    model._video_tables = {}
    return model
