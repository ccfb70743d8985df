"""Test-only ComfyUI nodes, linked into the throw-away ComfyUI of tests/test_native_comfyui.py (never shipped).

Wan's text encoder (umT5-XXL, 4096-d) cannot be made tiny: ComfyUI builds it from a fixed config, whatever the
weights. `Word Embedder (test)` is a CLIP stand-in with the interface the native nodes call (tokenize,
encode_from_tokens, encode_from_tokens_scheduled): every word is a fixed random 4096-d vector (seeded by a hash of
the word), one token per word, so CLIP Text Encode and the Reference Loader give real, text-dependent
CONDITIONING of Wan's width, identical for the native path and the pack's own.

Likewise the Wan 2.2 VAE (48 latent channels, 16x) exists only at full size (705M parameters; ComfyUI fixes its
width). `Patch VAE 48 (test)` stands in for it where only its encoder's interface matters (the Reference Loader's
references for a TI2V 5B model): each 16x16 pixel patch of a frame projected to 48 channels by a fixed random matrix.
"""
import zlib

import torch

DIM = 4096


class WordCLIP:
    def __init__(self, dim: int = DIM):
        self.dim = dim

    def tokenize(self, text, return_word_ids=False, **kwargs):
        return {"words": str(text).split() or ["<empty>"]}

    def _embed(self, words):
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode()))) for w in words]
        return torch.stack(rows)[None] * 0.5

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        emb = self._embed(tokens["words"])
        if return_dict:
            return {"cond": emb, "pooled_output": None}
        return (emb, None) if return_pooled else emb

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict=None, **kwargs):
        return [[self._embed(tokens["words"]), {"pooled_output": None, **(add_dict or {})}]]


class WordEmbedder:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return (WordCLIP(),)


class PatchVAE48:
    """encode(pixels [T, H, W, 3] in [0, 1]) -> [1, 48, T, H/16, W/16], as ComfyUI's Wan 2.2 VAE shapes one image."""

    latent_channels, spacial = 48, 16

    def __init__(self):
        self.proj = torch.randn(3 * self.spacial ** 2, self.latent_channels,
                                generator=torch.Generator().manual_seed(48)) / self.spacial

    def encode(self, pixels):
        t, h, w, c = pixels.shape
        s = self.spacial
        patches = pixels[..., :3].reshape(t, h // s, s, w // s, s, 3).permute(0, 1, 3, 2, 4, 5).reshape(
            t, h // s, w // s, s * s * 3)
        return (patches * 2 - 1).matmul(self.proj).permute(3, 0, 1, 2)[None]


class PatchVAELoader:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return (PatchVAE48(),)


NODE_CLASS_MAPPINGS = {"AlcheMinTTestWordEmbedder": WordEmbedder, "AlcheMinTTestPatchVAE48": PatchVAELoader}
NODE_DISPLAY_NAME_MAPPINGS = {"AlcheMinTTestWordEmbedder": "Word Embedder (test)",
                              "AlcheMinTTestPatchVAE48": "Patch VAE 48 (test)"}
