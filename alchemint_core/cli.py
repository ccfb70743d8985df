"""Command-line entry points of the pack (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import sys

import torch

from .config import WAN21_14B, WAN21_1_3B, AdapterConfig, CheckpointError
from .loading import load_model
from .model import WanModel


def cmd_info(args) -> int:
    """Print the architecture of a checkpoint, or of a standard Wan 2.1 config built without weights."""
    if args.model:
        model = load_model(args.model, adapter=args.adapter)
    else:
        with torch.device("meta"):
            model = WanModel(WAN21_14B if args.config == "14b" else WAN21_1_3B, AdapterConfig())
    print(model.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alchemint_core",
                                description="AlcheMinT: multi-reference video generation with timed subjects.")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a model's architecture",
                          description="Print the architecture of a Wan 2.1 checkpoint (with an optional AlcheMinT "
                                      "adapter), or of a standard config when no file is given.")
    info.add_argument("--model", help="Wan 2.1 T2V diffusion-model .safetensors file (default: none, show --config)")
    info.add_argument("--adapter", help="AlcheMinT adapter .safetensors file to load on top of --model")
    info.add_argument("--config", choices=["1.3b", "14b"], default="1.3b",
                      help="standard Wan 2.1 config to describe when --model is not given (default 1.3b)")
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
