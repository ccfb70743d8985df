"""Times ComfyUI's own Wan 2.1 model beside ours on the same config, weights, input and threads; run as a script by
`python -m alchemint_core bench` when COMFYUI_DIR is set (the core never imports ComfyUI, and ComfyUI's import-time
set-up stays out of the benchmark process). Prints one JSON line."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alchemint_core.bench import MID, paired_medians, random_inputs, random_model  # noqa: E402


def main(comfyui_dir: str, latent_thw: list[int], repeat: int, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    sys.path.insert(0, comfyui_dir)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True  # a CPU-only torch crashes ComfyUI's device probing otherwise
    import comfy.ldm.wan.model as wan
    import comfy.ops
    ours = random_model(MID)
    c = MID
    theirs = wan.WanModel(model_type="t2v", dim=c.dim, ffn_dim=c.ffn_dim, freq_dim=c.freq_dim, text_dim=c.text_dim,
                          num_heads=c.num_heads, num_layers=c.num_layers, cross_attn_norm=True,
                          operations=comfy.ops.disable_weight_init, dtype=torch.float32)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("alchemint.")})
    theirs.eval()
    x, ts, ctx, _ = random_inputs(ours, tuple(latent_thw), 0)
    with torch.no_grad():
        diff = float((ours(x, ts, ctx) - theirs(x, ts, ctx)).abs().max())
        a, b = paired_medians(lambda: ours(x, ts, ctx), lambda: theirs(x, ts, ctx), repeat)
    return {"ours_seconds": a, "comfyui_seconds": b, "max_abs_diff": diff, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(main(args["comfyui_dir"], args["latent_thw"], args["repeat"], args.get("threads", 0))))
