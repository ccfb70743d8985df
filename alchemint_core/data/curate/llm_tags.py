"""Entity tags extracted from a caption by a local instruction-tuned language model (the paper's appendix I.1): a
first pass lists the caption's groundable entities, a second pass (the paper's post-filter) is given that list back
and removes what breaks the rules. Both prompts are in prompts.toml; the answers are parsed as JSON lists. The
pipeline then enforces the rules itself (tags.apply_rules) and reports what it drops."""
from __future__ import annotations

import ast
import json
import re
from itertools import islice
from pathlib import Path

import torch

from ..dataset import DatasetError
from .backends.models import MODEL_FOLDERS, model_folder
from .tags import prompts

MAX_NEW_TOKENS = 256  # a caption's entity list is tens of tokens; the bound stops a model that never closes it
MAX_ANSWER_CHARS, MAX_BRACKETS = 4000, 32  # 256 tokens of text fit with room to spare
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # one of them is in every checkpoint's tokenizer


def fill(template: str, **values: str) -> str:
    """The prompt with its {name} placeholders filled in one pass, so a caption holding '{tags}' or other braces
    stays as written."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def closing(text: str, start: int) -> int | None:
    """The index just past the ']' that closes the '[' at `start`, quoted strings skipped; None if it never closes."""
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            escaped, quote = (not escaped and c == "\\"), (None if c == quote and not escaped else quote)
        elif c in "'\"":
            quote = c
        elif c in "[]":
            depth += 1 if c == "[" else -1
            if depth == 0:
                return i + 1
    return None


def first_list(answer: str):
    """The first [...] of the answer that parses: as JSON, else as a Python literal (single quotes, the usual slip).
    The first MAX_ANSWER_CHARS and their first MAX_BRACKETS '[' bound the work on a pathological answer."""
    text, decoder = answer[:MAX_ANSWER_CHARS], json.JSONDecoder()
    for start in islice((m.start() for m in re.finditer(r"\[", text)), MAX_BRACKETS):
        try:
            return decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            pass
        end = closing(text, start)
        try:
            if end is not None:
                return ast.literal_eval(text[start:end])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def parse_tags(answer: str) -> list[str]:
    """A model's answer -> the strings of its first list, white space collapsed; anything else (no list, numbers,
    nested lists) is left out, and an answer without a list gives an empty list: the model's text is not ours to
    trust, so it never raises."""
    found = first_list(answer)
    if not isinstance(found, list):
        return []
    return [" ".join(v.split()) for v in found if isinstance(v, str) and v.strip()]


class LanguageModelTagger:
    """`tagger(caption) -> tags`: the two passes, greedy decoding, each answer at most `max_new_tokens` long."""

    def __init__(self, model, tokenizer, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.prompts = prompts()

    @classmethod
    def from_folder(cls, models: str | Path | None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, max_new_tokens: int = MAX_NEW_TOKENS) -> "LanguageModelTagger":
        """The causal language model and tokenizer in `models`/tagger (transformers format, loaded from disk only),
        on `device` (default: the GPU when there is one) in `dtype` (default: bfloat16 on a GPU, float32 on CPU)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder = model_folder(models, "tagger")
        checkpoint = MODEL_FOLDERS["tagger"].checkpoint
        # transformers builds an empty tokenizer from a config alone, so the files are checked first
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise DatasetError(f"--models {models}: no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); "
                               f"put the whole {checkpoint} checkpoint there, tokenizer files included")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if not getattr(tokenizer, "chat_template", None):  # checked before the weights load: a 7B takes minutes
            raise DatasetError(f"--models {models}: the tokenizer in {folder} has no chat template, so it is not an "
                               f"instruction-tuned model; put an instruction-tuned checkpoint there (e.g. "
                               f"{checkpoint}, whose tokenizer_config.json has a chat_template)")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                     local_files_only=True)
        return cls(model.to(device).eval(), tokenizer, max_new_tokens)

    def pad_token_id(self) -> int | None:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def ask(self, prompt: str) -> str:
        """The model's greedy answer to one user message, formatted by the tokenizer's chat template."""
        # sanitize_control_tokens: a caption that holds '<|im_end|>' stays text, it cannot end the user's turn
        inputs = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                    sanitize_control_tokens=True, return_tensors="pt",
                                                    return_dict=True).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.pad_token_id())
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def __call__(self, caption: str) -> list[str]:
        found = parse_tags(self.ask(fill(self.prompts["extract"], caption=caption)))
        if not found:
            return []
        kept = parse_tags(self.ask(fill(self.prompts["filter"], caption=caption, tags=json.dumps(found))))
        # the second pass only removes: a phrase it rewrote or added is not one the first pass found
        return [tag for tag in kept if tag in found]
