"""Out of GPU memory: the allocator's error rewritten into one that names the options which need less memory.

The raised error is still a torch.cuda.OutOfMemoryError (= torch.OutOfMemoryError), so hosts that react to that
type (ComfyUI unloads its models and shows its own tips) keep doing so; only the message gains what to change.
"""
from __future__ import annotations

import contextlib
import gc

import torch

SAMPLING_OPTIONS = ("Model Loader offload_blocks = true (blocks visit the GPU one at a time)",
                    "Model Loader dtype fp8_e4m3fn (half the weight memory of fp16)",
                    "a smaller width/height or fewer frames",
                    "fewer subjects",
                    "reference_scale 1 or text_scale equal to it (one guidance pass fewer), four_pass off")
TRAINING_OPTIONS = ("batch_size smaller with grad_accum larger (same effective batch)",
                    "gradient_checkpointing = true",
                    "mode = \"lora\" or \"adapter\" instead of \"full\"",
                    "fsdp = true over several GPUs (torchrun)",
                    "shorter or smaller clips (cache --frames / --height / --width)")


class OutOfMemory(torch.cuda.OutOfMemoryError):
    """Ran out of device memory; the message lists the settings that reduce it."""


@contextlib.contextmanager
def explain_out_of_memory(what: str, options: tuple[str, ...]):
    """Turn an out-of-memory error inside the block into OutOfMemory naming `options`; memory the failed step
    held is released first, so the next run starts clean."""
    try:
        yield
    except OutOfMemory:
        raise
    except torch.cuda.OutOfMemoryError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        del err
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"{what} ran out of GPU memory ({first[:160]}); to need less, use any of: "
                          + "; ".join(options)) from None
