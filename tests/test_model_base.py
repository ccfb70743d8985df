"""The base DiT is Wan 2.1: parameter names/shapes of the real configs, numerics against an oracle,
checkpoint loading in every layout and dtype."""
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

import alchemint_core as ac
from alchemint_core.model.config import infer_config
from conftest import ROOT, TINY, manifest, tiny_model
from wan_oracle import wan_forward


@pytest.mark.parametrize("cfg,name", [(ac.WAN21_1_3B, "wan21_t2v_1.3b_keys.json"), (ac.WAN21_14B, "wan21_t2v_14b_keys.json")])
def test_parameter_names_and_shapes_match_wan_checkpoints(cfg, name):
    with torch.device("meta"):
        model = ac.WanModel(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest(name)


@pytest.mark.parametrize("cfg,name", [(ac.WAN21_1_3B, "wan21_t2v_1.3b_keys.json"), (ac.WAN21_14B, "wan21_t2v_14b_keys.json")])
def test_config_is_inferred_from_shapes(cfg, name):
    assert infer_config(manifest(name)) == cfg


def test_forward_equals_independent_wan_oracle():
    model = tiny_model(seed=3).double()
    model.compute_dtype = torch.float64
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 3, 8, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([999.0, 137.5], dtype=torch.float64)
    ctx = torch.randn(2, 5, TINY.text_dim, generator=g, dtype=torch.float64)
    ours = model(x, t, ctx)
    ref = wan_forward(model.state_dict(), x, t, ctx, TINY.num_heads)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_float32_matches_oracle_closely():
    model = tiny_model(seed=4)
    x = torch.randn(1, 16, 2, 4, 4)
    ctx = torch.randn(1, 3, TINY.text_dim)
    ours = model(x, torch.tensor([400.0]), ctx).double()
    ref = wan_forward(model.state_dict(), x, torch.tensor([400.0]), ctx, TINY.num_heads)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_tiny_config_round_trips_safetensors(tmp_path, prefix):
    model = tiny_model(seed=5)
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = ac.load_model(path)
    assert loaded.cfg.dim == TINY.dim and loaded.cfg.num_layers == TINY.num_layers
    assert loaded.cfg.text_dim == TINY.text_dim and loaded.cfg.freq_dim == TINY.freq_dim
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, TINY.text_dim)
    torch.testing.assert_close(loaded(x, torch.tensor([250.0]), ctx), model(x, torch.tensor([250.0]), ctx), rtol=1e-5, atol=1e-5)


def test_saved_model_carries_config_header(tmp_path):
    cfg = ac.WanConfig(dim=96, ffn_dim=128, num_heads=3, num_layers=1, text_dim=16, freq_dim=16, rope_time_theta=50.0)
    model = tiny_model(cfg=cfg)
    ac.save_model(model, tmp_path / "m.safetensors")
    loaded = ac.load_model(tmp_path / "m.safetensors")
    assert loaded.cfg == cfg  # head count and RoPE bank are not in the shapes: the header carries them


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 6e-2)])
def test_half_precision_weights_load_and_compute(tmp_path, dtype, tol):
    model = tiny_model(seed=6)
    path = tmp_path / "half.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = ac.load_model(path)
    assert loaded.blocks[0].self_attn.q.weight.dtype == dtype  # kept as stored
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, TINY.text_dim)
    out, ref = loaded(x, torch.tensor([600.0]), ctx), model(x, torch.tensor([600.0]), ctx)
    assert (out - ref).abs().max() / ref.abs().max() < tol


def test_fp8_weights_are_kept_fp8_and_upcast_per_layer(tmp_path):
    model = tiny_model(seed=7)
    sd = model.state_dict()
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 and k.endswith(".weight") else v).contiguous() for k, v in sd.items()}
    from safetensors.torch import save_file
    save_file(fp8, str(tmp_path / "fp8.safetensors"))
    loaded = ac.load_model(tmp_path / "fp8.safetensors")
    assert loaded.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    # Same function as an fp32 model holding the fp8-rounded weights.
    rounded = tiny_model(seed=7)
    rounded.load_state_dict({k: v.float() for k, v in fp8.items()})
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, TINY.text_dim)
    torch.testing.assert_close(loaded(x, torch.tensor([100.0]), ctx), rounded(x, torch.tensor([100.0]), ctx))


def test_scaled_fp8_checkpoints_apply_their_scale(tmp_path):
    model = tiny_model(seed=8)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    w = sd["blocks.0.ffn.0.weight"]
    scale = w.abs().max() / 448
    sd["blocks.0.ffn.0.weight"] = (w / scale).to(torch.float8_e4m3fn)
    sd["blocks.0.ffn.0.scale_weight"] = scale.reshape(1)
    sd["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "scaled.safetensors"))
    loaded = ac.load_model(tmp_path / "scaled.safetensors")
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, TINY.text_dim)
    out, ref = loaded(x, torch.tensor([100.0]), ctx), model(x, torch.tensor([100.0]), ctx)
    assert (out - ref).abs().max() / ref.abs().max() < 0.05


def test_dtype_argument_converts_storage(tmp_path):
    model = tiny_model(seed=9)
    ac.save_model(model, tmp_path / "m.safetensors")
    loaded = ac.load_model(tmp_path / "m.safetensors", dtype=torch.float8_e4m3fn)
    assert loaded.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert loaded.blocks[0].self_attn.q.bias.dtype == torch.float32  # vectors never go to fp8
    assert loaded.compute_dtype == torch.float32


def test_loading_assigns_from_the_memory_map_without_a_second_copy(tmp_path):
    """Peak resident memory of loading + touching every weight stays near the file size."""
    cfg = ac.WanConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=8, text_dim=256, freq_dim=64)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ac.WanModel(cfg).state_dict().items()}
    from safetensors.torch import save_file
    path = tmp_path / "big.safetensors"
    save_file({k: torch.full(s, 0.01) for k, s in shapes.items()}, str(path))
    size = path.stat().st_size
    code = textwrap.dedent(f"""
        import resource, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        import alchemint_core as ac
        torch.zeros(1)  # warm the allocator before measuring
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        m = ac.load_model({str(path)!r})
        total = sum(float(p.float().sum()) for p in m.parameters())  # touch every page
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(after - before)
    """)
    growth = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert growth < 1.25 * size, (growth, size)


def test_model_summary_names_the_config():
    text = tiny_model().summary()
    assert "dim 256" in text and "2 blocks" in text


def test_x_prediction_turns_the_heads_clean_estimate_into_the_velocity():
    """prediction 'x': the head's output is the clean latents x0 and the model returns (x_t - x0) / sigma, sigma
    floored at 0.05, so samplers, guidance and the loss stay in velocity."""
    import dataclasses

    from alchemint_core.model.config import X_PREDICTION_MIN_SIGMA
    v_model = tiny_model(seed=4)
    x_model = ac.WanModel(dataclasses.replace(TINY, prediction="x")).eval()
    x_model.load_state_dict(v_model.state_dict())
    x = torch.randn(2, TINY.in_dim, 2, 4, 4, dtype=torch.float64)
    ctx = torch.randn(2, 3, TINY.text_dim, dtype=torch.float64)
    v_model, x_model = v_model.double(), x_model.double()
    t = torch.tensor([700.0, 10.0], dtype=torch.float64)  # sigma 0.7, and 0.01 (floored)
    with torch.no_grad():
        head = v_model(x, t, ctx)  # the same weights read as a velocity model: the raw head output
        out = x_model(x, t, ctx)
    sigma = torch.tensor([0.7, X_PREDICTION_MIN_SIGMA], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(out, (x - head) / sigma)
    with pytest.raises(ac.CheckpointError, match="prediction 'noise' must be one of"):
        dataclasses.replace(TINY, prediction="noise").validate()
