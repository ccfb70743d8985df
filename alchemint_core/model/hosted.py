"""AlcheMinT's forward pass computed through another Wan implementation's own modules (ComfyUI's, for one).

A host is any module laid out as Wan 2.1's DiT (the official code's attribute names): patch_embedding, text_embedding,
time_embedding, time_projection, blocks[i].{norm1, self_attn.{q, k, v, o, norm_q, norm_k}, norm3, cross_attn, norm2,
ffn, modulation}, head, plus dim / ffn_dim / num_heads / freq_dim / text_dim / out_dim / patch_size / eps.
`HostedWan` gives `WanModel.forward` and `Block.forward` of transformer.py exactly the attributes they read, so the one
AlcheMinT forward pass (reference and tag tokens, index embeddings, WeRoPE tables, clean-token modulation) runs on
the host's modules: whatever the host does inside them (LoRA patches, fp8 or GGUF weights cast per layer, weights
offloaded) still applies. Only the attention primitive of unmasked self-attention comes from the caller (the host's
attention backend, through SelfAttention.attend); cross-attention is the host's own module whenever the text needs
no key mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..files import SafetensorsFile
from .config import AdapterConfig, CheckpointError, WanConfig
from .layers import attention
from .loading import LORA_PREFIX, adapter_config_of
from .rope import RopeBank
from .transformer import AlcheMinTAdapter, Block, CrossAttention, SelfAttention, WanModel

# attend(q, k, v) on [B, L, H, D] -> [B, L, H*D]: the host's attention for unmasked self-attention
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LAYOUT = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "blocks", "head")


def host_config(host) -> WanConfig:
    """The WanConfig of a host model, read off its attributes; ValueError (one line, with the fix) for a model that
    is not a Wan 2.1-layout text-to-video DiT."""
    missing = [n for n in LAYOUT if not hasattr(host, n)]
    if missing:
        raise ValueError(f"this is not a Wan model ({type(host).__name__} has no {', '.join(missing)}); load a Wan "
                         "2.1 T2V file with Load Diffusion Model")
    kind = getattr(host, "model_type", "t2v")
    if kind != "t2v" or getattr(host, "img_emb", None) is not None:
        raise ValueError(f"this is a Wan {kind} (image-to-video) model; AlcheMinT builds on text-to-video: load a "
                         "wan2.1_t2v or wan2.2_t2v file")
    if any(getattr(host, n, None) is not None for n in ("vace_blocks", "control_adapter", "audio_injector",
                                                         "ref_conv")):
        raise ValueError(f"this is a Wan variant ({type(host).__name__}: VACE, camera, sound or reference-conv "
                         "model); AlcheMinT builds on the plain text-to-video model: load a wan2.1_t2v or "
                         "wan2.2_t2v file")
    w = host.patch_embedding.weight
    in_dim = int(w.shape[1])
    if in_dim != int(host.out_dim):
        raise ValueError(f"this Wan model reads {in_dim} input channels for {host.out_dim} output channels (an "
                         "image-to-video or control variant); load a plain text-to-video file")
    try:
        return WanConfig(dim=int(host.dim), ffn_dim=int(host.ffn_dim), num_heads=int(host.num_heads),
                         num_layers=len(host.blocks), in_dim=in_dim, out_dim=int(host.out_dim),
                         text_dim=int(host.text_dim), freq_dim=int(host.freq_dim),
                         patch_size=tuple(int(p) for p in host.patch_size), eps=float(host.eps),
                         cross_attn_norm=bool(host.cross_attn_norm)).validate()
    except (AttributeError, TypeError) as err:
        raise ValueError(f"this model lacks part of Wan's layout ({err}); load a Wan 2.1 or 2.2 text-to-video "
                         "file") from None


def load_adapter_file(path, base: WanConfig, expert: str | None = None
                      ) -> tuple[AlcheMinTAdapter, dict[str, torch.Tensor]]:
    """An adapter file for `base` (expert: "high"/"low" for a Wan 2.2 A14B expert, whose shapes are Wan 2.1 14B's)
    -> (its new parameters as a module, its LoRA deltas under ComfyUI's key names). Refused with a one-line
    CheckpointError when it was trained for another base or is damaged."""
    f = SafetensorsFile(path)
    cfg: AdapterConfig = adapter_config_of(f, base, expert)
    with torch.device("meta"):
        module = AlcheMinTAdapter(base, cfg)
    expected = {f"alchemint.{k}": v for k, v in module.state_dict().items()}
    own = {k for k in f.keys() if k.startswith("alchemint.")}
    lora = {k: f.tensor(k) for k in f.keys() if k.startswith(LORA_PREFIX)}
    stray = sorted(set(f.keys()) - own - set(lora))
    if own != set(expected) or stray or bool(lora) != bool(cfg.lora_rank):
        raise CheckpointError(f"{Path(path).name}: adapter tensors do not match its own config (missing "
                              f"{sorted(set(expected) - own)[:3]}, unexpected {sorted(own - set(expected))[:3] + stray[:3]})"
                              "; the file is damaged: save it again")
    state = {}
    for k, v in expected.items():
        t = f.tensor(k)
        if list(t.shape) != list(v.shape):
            raise CheckpointError(f"{Path(path).name}: {k} has shape {list(t.shape)}, expected {list(v.shape)}")
        state[k[len("alchemint."):]] = t.clone()
    module.load_state_dict(state, strict=True, assign=True)
    return module.requires_grad_(False).eval(), lora


class HostedSelfAttention:
    """A host block's self-attention seen as transformer.py's SelfAttention (AlcheMinT's RoPE tables, of any
    magnitude for WeRoPE, and key mask), attending with the host's backend when no key is masked."""

    def __init__(self, attn, backend: Attend | None):
        self.num_heads, self.q, self.k, self.v, self.o = attn.num_heads, attn.q, attn.k, attn.v, attn.o
        self.norm_q, self.norm_k = attn.norm_q, attn.norm_k
        self.backend = backend

    def attend(self, q, k, v, key_mask):
        if key_mask is not None or self.backend is None:  # padded keys: PyTorch's masked attention
            return attention(q, k, v, key_mask)
        return self.backend(q, k, v)

    def __call__(self, x: torch.Tensor, table: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return SelfAttention.forward(self, x, table, key_mask)


class HostedCrossAttention:
    """The host's own cross-attention module, or the same computation with a text key mask."""

    def __init__(self, attn, options: dict | None):
        self.attn, self.options = attn, options

    def __call__(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        if key_mask is not None:
            return CrossAttention.forward(self.attn, x, context, key_mask)
        if self.options is None:
            return self.attn(x, context)
        return self.attn(x, context, transformer_options=self.options)


class HostedBlock:
    """A host block seen as transformer.py's Block."""

    def __init__(self, block, device, attend: Attend | None, options: dict | None):
        self.block, self.device = block, device
        self.norm1, self.norm2, self.norm3, self.ffn = block.norm1, block.norm2, block.norm3, block.ffn
        self.self_attn = HostedSelfAttention(block.self_attn, attend)
        self.cross_attn = HostedCrossAttention(block.cross_attn, options)

    @property
    def modulation(self) -> torch.Tensor:  # a bare parameter: may sit on the offload device
        return self.block.modulation.to(self.device)

    def __call__(self, x, step, dense=None):
        return Block.forward(self, x, step, dense)


class HostedWan:
    """A host model plus an AlcheMinT adapter, callable as WanModel: hosted(x, timestep, context, refs=...)."""

    gradient_checkpointing = False
    embed_patches = WanModel.embed_patches
    time_modulation = WanModel.time_modulation
    video_rope = WanModel.video_rope
    pack = WanModel.pack

    def __init__(self, host, adapter: AlcheMinTAdapter | None, cfg: WanConfig | None = None,
                 attend: Attend | None = None, options: dict | None = None):
        self.host, self.alchemint = host, adapter
        self.cfg = cfg or host_config(host)
        self.bank = RopeBank(self.cfg)
        self.attend, self.options = attend, options
        self.text_embedding, self.time_embedding = host.text_embedding, host.time_embedding
        self.time_projection, self.head = host.time_projection, host.head
        self.compute_dtype = torch.float32
        self.expert = None
        self._video_tables: dict = {}

    def patch_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.host.patch_embedding(x.float())  # Wan embeds patches in float32

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, refs=None,
                 context_mask: torch.Tensor | None = None, dense=None) -> torch.Tensor:
        """As WanModel.forward, computing in x's dtype."""
        self.compute_dtype = x.dtype
        self.blocks = [HostedBlock(b, x.device, self.attend, self.options) for b in self.host.blocks]
        if self.alchemint is not None:
            self.alchemint.to(x.device)
        return WanModel.forward(self, x, timestep, context, refs=refs, context_mask=context_mask, dense=dense)
