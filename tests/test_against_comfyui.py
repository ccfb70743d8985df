"""With COMFYUI_DIR set: our base DiT against ComfyUI's own Wan 2.1 implementation, same weights and inputs."""
import os
import sys

import pytest
import torch

from conftest import tiny_model

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")]


@pytest.fixture(scope="module")
def comfy_wan():
    """ComfyUI's Wan model imported from COMFYUI_DIR; afterwards every module imported from there is forgotten and
    the path removed, so later tests do not find ComfyUI's folder_paths (our nodes would then think they run inside
    a ComfyUI that never registered their model folder)."""
    before = set(sys.modules)
    sys.path.insert(0, COMFYUI_DIR)
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        import comfy.ldm.wan.model as wan
        import comfy.ops
        yield wan, comfy.ops.disable_weight_init
    finally:
        sys.path.remove(COMFYUI_DIR)
        root = os.path.realpath(COMFYUI_DIR)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if os.path.realpath(file).startswith(root + os.sep):
                del sys.modules[name]


@pytest.mark.parametrize("shape,t", [((1, 16, 3, 8, 6), [900.0]), ((2, 16, 2, 4, 4), [10.0, 500.0])])
def test_matches_comfyui_wan(comfy_wan, shape, t):
    wan, ops = comfy_wan
    ours = tiny_model(seed=12)
    cfg = ours.cfg
    theirs = wan.WanModel(model_type="t2v", dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim,
                          text_dim=cfg.text_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                          cross_attn_norm=True, operations=ops, dtype=torch.float32)
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    ctx = torch.randn(shape[0], 7, cfg.text_dim, generator=g)
    ts = torch.tensor(t)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ts, ctx), theirs(x, ts, ctx), rtol=2e-4, atol=2e-4)


def test_bench_times_comfyuis_wan_on_the_same_weights_and_input(comfy_wan):
    """The bench's side-by-side timing runs both models on identical weights and input (outputs agree)."""
    from alchemint_core.bench import against_comfyui
    fig = against_comfyui(COMFYUI_DIR, latent_thw=(2, 8, 8), repeat=1)
    assert fig.detail["max_abs_diff"] < 1e-3
    assert fig.value > 0 and fig.detail["ours_seconds"] > 0 and fig.detail["comfyui_seconds"] > 0
