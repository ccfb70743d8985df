"""The GPU paths exercised on the CPU (block offloading, compiled blocks, fp8 weights computed in bf16), the hot
paths' once-per-run work, and the bench command itself (its figures are printed, never asserted)."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import alchemint_core as ac
import alchemint_core.model.transformer as model_module
from alchemint_core.sampling.guidance import Conditioning, Guidance
from alchemint_core.model.references import References
from alchemint_core.sampling.flow import generate
from conftest import ROOT, tiny_model


def inputs(model, refs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 8, 8, generator=g)
    ctx = torch.randn(1, 7, model.cfg.text_dim, generator=g)
    r = References(torch.randn(1, refs, 16, 8, 8, generator=g), torch.randn(1, refs, 3, model.cfg.text_dim, generator=g),
                   torch.tensor([[[0.0, 1.0], [1.0, 2.0]]])[:, :refs])
    return x, torch.tensor([700.0]), ctx, r


@pytest.fixture
def adapted():
    return tiny_model(seed=4, adapter=ac.AdapterConfig(max_refs=4))


def test_block_offloading_keeps_one_block_on_the_device_and_the_same_output(adapted):
    x, t, ctx, refs = inputs(adapted)
    with torch.no_grad():
        expected = adapted(x, t, ctx, refs=refs)
        off = adapted.offload_blocks("cpu")
        assert off.resident() == []  # between passes no block's weights are on the compute device
        seen = []
        probes = [b.register_forward_pre_hook(lambda m, a: seen.append(off.resident())) for b in adapted.blocks]
        got = adapted(x, t, ctx, refs=refs)
        for p in probes:
            p.remove()
        assert seen == [[0], [1]] and off.resident() == []
        assert torch.equal(got, expected)
        off.remove()
        assert torch.equal(adapted(x, t, ctx, refs=refs), expected)


def test_compiled_blocks_capture_into_one_graph_and_match(adapted):
    """Dynamo captures every block (fullgraph: no graph break); the 'eager' backend keeps the test fast, the
    bench times inductor's code."""
    x, t, ctx, refs = inputs(adapted)
    torch._dynamo.reset()
    with torch.no_grad():
        expected = adapted(x, t, ctx, refs=refs)
        adapted.compile_blocks(backend="eager", fullgraph=True)
        torch.testing.assert_close(adapted(x, t, ctx, refs=refs), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapted(x * 0.5, t * 0.5, ctx, refs=refs),
                                   tiny_model(seed=4, adapter=ac.AdapterConfig(max_refs=4))(x * 0.5, t * 0.5, ctx,
                                                                                            refs=refs),
                                   rtol=1e-5, atol=1e-5)


def test_fp8_weights_compute_in_bf16(tmp_path):
    """fp8-e4m3 storage with bf16 compute (the GPU path for 14B on small cards) stays close to fp32 compute."""
    model = tiny_model(seed=2)
    sd = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 and k.endswith(".weight") else v).contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "fp8.safetensors"))
    fp32 = ac.load_model(tmp_path / "fp8.safetensors", compute_dtype=torch.float32)
    bf16 = ac.load_model(tmp_path / "fp8.safetensors", compute_dtype=torch.bfloat16)
    assert bf16.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    x, t, ctx, _ = inputs(model)
    with torch.no_grad():
        a, b = fp32(x, t, ctx), bf16(x, t, ctx)
    assert b.dtype == x.dtype and torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.02 * a.abs().mean()


def test_rope_tables_and_reference_tokens_are_built_once_per_sampling_run(adapted, monkeypatch):
    calls = {"video_table": 0, "pack_references": 0, "reference_tables": 0}

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    import alchemint_core.model.references as references_module
    monkeypatch.setattr(model_module, "video_table", counting("video_table", model_module.video_table))
    monkeypatch.setattr(model_module, "pack_references", counting("pack_references", model_module.pack_references))
    monkeypatch.setattr(references_module, "reference_tables",
                        counting("reference_tables", references_module.reference_tables))
    x, _, ctx, refs = inputs(adapted)
    adapted._video_tables = {}
    generate(adapted, Conditioning(ctx, refs), torch.zeros(1, 5, adapted.cfg.text_dim), x.shape, seed=0,
             guidance=Guidance(2.0, 3.0), steps=6)
    # one video table, one packing of the three guidance passes (one reference table per sample of the batch)
    assert calls == {"video_table": 1, "pack_references": 1, "reference_tables": 3}


def test_bench_command_prints_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "alchemint_core", "bench", "--quick", "--out", str(out),
                        "--only", "references", "--only", "guidance", "--only", "limit", "--only", "loading",
                        "--only", "scaling"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    figures = json.loads(out.read_text())["figures"]
    names = [f["name"] for f in figures]
    assert {"guidance batching, 3 passes", "distance to the limit, 1.3B width", "loading, time / raw read",
            "loading, peak memory growth / file size", "reference overhead, 2 refs"} <= set(names)
    assert any(n.startswith("scaling,") for n in names)
    assert all(f["value"] > 0 for f in figures)
    assert "| guidance batching, 3 passes |" in r.stdout


def test_bench_demo_training_runs_the_trainer_on_the_shipped_encoders_latents():
    """The bench's demo-training figure trains the shipped model's config on a cache made with the shipped encoders
    (their latent channels must match the config's)."""
    from alchemint_core.bench import demo_training
    figure = demo_training(steps=2, batch=2)
    assert figure.value > 0 and figure.detail == {"batch": 2, "steps": 2}
