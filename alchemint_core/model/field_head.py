"""A neural-field head beside Wan's linear head (after PixNerd, Wang et al. 2025), for latents that hold many
values per token, such as the demo's pixel latents (768 per token: 8x8 pixels x 3 colours x 4 frames).

The linear head reads every output value of a token as a fixed linear function of the token's features, so an
outline crossing the token must already be computed value by value inside the blocks. The field gives each output
channel a learned code and maps it through a one-hidden-layer MLP whose weights the token's features generate: a
hidden unit is a soft threshold over the codes that the features orient and place, the way a shape's edge is a
threshold over pixel positions. Its read-out starts at zero, so a model grown with a field computes exactly what
it computed before.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import Linear

CODE_DIM = 16  # size of each output channel's learned code


class FieldHead(nn.Module):
    def __init__(self, dim: int, channels: int, hidden: int, code_dim: int = CODE_DIM):
        super().__init__()
        self.hidden, self.code_dim = hidden, code_dim
        self.codes = nn.Parameter(torch.randn(channels, code_dim))
        # per token: the hidden layer's weights [hidden, code_dim] and biases [hidden], the read-out [hidden]
        self.proj = Linear(dim, hidden * (code_dim + 2))
        self.zero_readout()

    @torch.no_grad()
    def zero_readout(self) -> None:
        """Output exactly zero until trained (the read-out rows are the last `hidden` of proj)."""
        self.proj.weight[-self.hidden:].zero_()
        self.proj.bias[-self.hidden:].zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y [B, N, dim] (the head's normalised, modulated features) -> [B, N, channels]."""
        w, b, c = self.proj(y).split([self.hidden * self.code_dim, self.hidden, self.hidden], dim=-1)
        w = rearrange(w, "b n (h e) -> b n h e", h=self.hidden)
        z = torch.matmul(w, self.codes.to(w.dtype).t()) + b[..., None]  # [B, N, hidden, channels]
        return torch.matmul(c[..., None, :], F.gelu(z))[..., 0, :]
