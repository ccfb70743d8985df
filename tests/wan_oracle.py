"""A deliberately naive Wan 2.1 T2V forward pass, written from the published architecture independently of
alchemint_core (explicit loops over heads, complex-number RoPE, explicit softmax), used as a test oracle."""
import math

import torch


def _linear(sd, name, x):
    return x @ sd[f"{name}.weight"].double().T + sd[f"{name}.bias"].double()


def _rms(sd, name, x, eps=1e-6):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * sd[f"{name}.weight"].double()


def _ln(x, eps=1e-6, w=None, b=None):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    return y * w + b if w is not None else y


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _rope_freqs(head_dim, f, h, w, theta=10000.0):
    """Complex rotation per token [f*h*w, head_dim/2]: time 44, height 42, width 42 real dims at head_dim 128."""
    dh = 2 * (head_dim // 6)
    dt = head_dim - 2 * dh
    parts = []
    for n, dim in ((f, dt), (h, dh), (w, dh)):
        inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        parts.append(torch.polar(torch.ones(n, dim // 2, dtype=torch.float64),
                                 torch.arange(n, dtype=torch.float64)[:, None] * inv[None]))
    out = torch.zeros(f, h, w, head_dim // 2, dtype=torch.complex128)
    for t in range(f):
        for i in range(h):
            for j in range(w):
                out[t, i, j] = torch.cat([parts[0][t], parts[1][i], parts[2][j]])
    return out.reshape(f * h * w, -1)


def wan_forward(sd, x, t, context, num_heads, patch=(1, 2, 2)):
    """sd: Wan state dict (bare keys). x [B,C,F,H,W], t [B], context [B,L,text_dim] -> velocity, float64."""
    sd = {k: v.double() for k, v in sd.items()}
    b, c, F, H, W = x.shape
    pf, ph, pw = patch
    f, h, w = F // pf, H // ph, W // pw
    dim = sd["patch_embedding.weight"].shape[0]
    hd = dim // num_heads
    # patchify as a matrix product over flattened patches
    xp = x.double().reshape(b, c, f, pf, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, f * h * w, -1)
    tok = xp @ sd["patch_embedding.weight"].reshape(dim, -1).T + sd["patch_embedding.bias"]
    half = sd["time_embedding.0.weight"].shape[1] // 2
    ang = t.double()[:, None] * torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half)[None]
    sin = torch.cat([torch.cos(ang), torch.sin(ang)], 1)
    e = _linear(sd, "time_embedding.2", torch.nn.functional.silu(_linear(sd, "time_embedding.0", sin)))
    e0 = _linear(sd, "time_projection.1", torch.nn.functional.silu(e)).reshape(b, 6, dim)
    ctx = _linear(sd, "text_embedding.2", _gelu_tanh(_linear(sd, "text_embedding.0", context.double())))
    rot = _rope_freqs(hd, f, h, w)

    def attn(q, k, v, rope):
        out = torch.zeros_like(q)
        for head in range(num_heads):
            sl = slice(head * hd, (head + 1) * hd)
            qh, kh = q[..., sl], k[..., sl]
            if rope:
                qh = torch.view_as_real(torch.view_as_complex(qh.reshape(*qh.shape[:-1], -1, 2).contiguous()) * rot).flatten(-2)
                kh = torch.view_as_real(torch.view_as_complex(kh.reshape(*kh.shape[:-1], -1, 2).contiguous()) * rot).flatten(-2)
            s = qh @ kh.transpose(-1, -2) / math.sqrt(hd)
            out[..., sl] = torch.softmax(s, -1) @ v[..., sl]
        return out

    n_layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(n_layers):
        p = f"blocks.{i}."
        m = sd[p + "modulation"] + e0  # [B, 6, dim]
        y = _ln(tok) * (1 + m[:, 1:2]) + m[:, 0:1]
        q = _rms(sd, p + "self_attn.norm_q", _linear(sd, p + "self_attn.q", y))
        k = _rms(sd, p + "self_attn.norm_k", _linear(sd, p + "self_attn.k", y))
        v = _linear(sd, p + "self_attn.v", y)
        tok = tok + _linear(sd, p + "self_attn.o", attn(q, k, v, True)) * m[:, 2:3]
        y = _ln(tok, w=sd[p + "norm3.weight"], b=sd[p + "norm3.bias"])
        q = _rms(sd, p + "cross_attn.norm_q", _linear(sd, p + "cross_attn.q", y))
        k = _rms(sd, p + "cross_attn.norm_k", _linear(sd, p + "cross_attn.k", ctx))
        v = _linear(sd, p + "cross_attn.v", ctx)
        tok = tok + _linear(sd, p + "cross_attn.o", attn(q, k, v, False))
        y = _ln(tok) * (1 + m[:, 4:5]) + m[:, 3:4]
        y = _linear(sd, p + "ffn.2", _gelu_tanh(_linear(sd, p + "ffn.0", y)))
        tok = tok + y * m[:, 5:6]
    hm = sd["head.modulation"] + e[:, None]
    out = _linear(sd, "head.head", _ln(tok) * (1 + hm[:, 1:2]) + hm[:, 0:1])
    out = out.reshape(b, f, h, w, pf, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, -1, F, H, W)
