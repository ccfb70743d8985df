"""Test-only ComfyUI nodes, linked into the throw-away ComfyUI of tests/test_native_comfyui.py (never shipped).

Wan's text encoder (umT5-XXL, 4096-d) cannot be made tiny: ComfyUI builds it from a fixed config, whatever the
weights. `Word Embedder (test)` is a CLIP stand-in with the interface the native nodes call (tokenize,
encode_from_tokens, encode_from_tokens_scheduled): every word is a fixed random 4096-d vector (seeded by a hash of
the word), one token per word, so CLIP Text Encode and the Reference Loader give real, text-dependent
CONDITIONING of Wan's width, identical for the native path and the pack's own.
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


NODE_CLASS_MAPPINGS = {"AlcheMinTTestWordEmbedder": WordEmbedder}
NODE_DISPLAY_NAME_MAPPINGS = {"AlcheMinTTestWordEmbedder": "Word Embedder (test)"}
