"""AlcheMinT conditioning: reference packing, index embeddings, tags, adapter files, LoRA."""
import pytest
import torch

import alchemint_core as ac
from alchemint_core.model.loading import LORA_PREFIX
from alchemint_core.model.rope import TemporalRope
from conftest import TINY, randomize, tiny_model
from safetensors import safe_open


def make_refs(b=1, r=2, lt=3, h=8, w=8, seed=0, intervals=None):
    g = torch.Generator().manual_seed(seed)
    iv = intervals if intervals is not None else torch.tensor([[0.0, 1.0], [1.0, 2.0], [0.5, 1.5]][:r]).expand(b, r, 2)
    return ac.References(torch.randn(b, r, 16, h, w, generator=g), torch.randn(b, r, lt, TINY.text_dim, generator=g),
                         iv.clone())


def inputs(b=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 16, 3, 8, 8, generator=g), torch.full((b,), 700.0), torch.randn(b, 4, TINY.text_dim, generator=g)


@pytest.fixture
def model():
    return tiny_model(seed=2, adapter=ac.AdapterConfig())


def test_fresh_adapter_index_embeddings_start_at_zero():
    m = ac.WanModel(TINY, ac.AdapterConfig())
    assert not m.alchemint.ref_index_embedding.any()


def test_references_change_the_video_and_output_keeps_the_video_shape(model):
    x, t, ctx = inputs()
    plain = model(x, t, ctx)
    with_refs = model(x, t, ctx, refs=make_refs())
    assert with_refs.shape == x.shape
    assert (with_refs - plain).abs().max() > 1e-3
    other = model(x, t, ctx, refs=make_refs(seed=5))
    assert (other - with_refs).abs().max() > 1e-3  # the output depends on what the references show


def test_reference_order_matters_through_index_embeddings(model):
    x, t, ctx = inputs()
    refs = make_refs(intervals=torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]))
    swapped = ac.References(refs.latents.flip(1), refs.tags.flip(1), refs.intervals)
    assert (model(x, t, ctx, refs=refs) - model(x, t, ctx, refs=swapped)).abs().max() > 1e-4
    # without index embeddings (and tags, whose diagonal positions follow the order) the references are a set
    model.alchemint.ref_index_embedding.data.zero_()
    refs.tag_lengths = swapped.tag_lengths = torch.zeros(1, 2, dtype=torch.long)
    torch.testing.assert_close(model(x, t, ctx, refs=refs), model(x, t, ctx, refs=swapped), atol=1e-5, rtol=1e-5)


def test_reference_intervals_change_the_output_under_werope_but_not_none(model):
    x, t, ctx = inputs()
    a, b = make_refs(), make_refs()
    b.intervals = torch.tensor([[[0.0, 2.0], [0.0, 0.5]]])
    assert (model(x, t, ctx, refs=a) - model(x, t, ctx, refs=b)).abs().max() > 1e-4
    a.rope = b.rope = TemporalRope("none")
    torch.testing.assert_close(model(x, t, ctx, refs=a), model(x, t, ctx, refs=b))


def test_absent_slots_equal_omitting_the_reference(model):
    x, t, ctx = inputs()
    two = make_refs(r=2)
    one = ac.References(two.latents[:, :1], two.tags[:, :1], two.intervals[:, :1])
    two.present = torch.tensor([[True, False]])
    torch.testing.assert_close(model(x, t, ctx, refs=two), model(x, t, ctx, refs=one), atol=1e-5, rtol=1e-5)


def test_batch_with_different_tag_lengths_equals_separate_runs(model):
    x, t, ctx = inputs(b=2)
    refs = make_refs(b=2, lt=4, seed=3)
    refs.tag_lengths = torch.tensor([[4, 1], [2, 3]])
    batched = model(x, t, ctx, refs=refs)
    for i in range(2):
        n = refs.tag_lengths[i]
        single = ac.References(refs.latents[i:i + 1], refs.tags[i:i + 1, :, : int(n.max())], refs.intervals[i:i + 1],
                               tag_lengths=n[None])
        torch.testing.assert_close(batched[i:i + 1], model(x[i:i + 1], t[i:i + 1], ctx[i:i + 1], refs=single),
                                   atol=2e-5, rtol=2e-5)


def test_packed_references_are_reused_across_steps(model):
    x, t, ctx = inputs()
    refs = make_refs()
    packed = model.pack(refs, x.shape)
    n_tokens = 2 * 16 + 2 * 3  # one latent frame of 4x4 tokens per reference + 3 tag tokens each
    assert packed.tokens.shape == (1, n_tokens, TINY.dim)
    torch.testing.assert_close(model(x, t, ctx, refs=packed), model(x, t, ctx, refs=refs))


def test_dropped_references_keep_slots_and_intervals(model):
    refs = make_refs()
    dropped = refs.dropped()
    assert not dropped.latents.any() and not dropped.tags.any()
    assert torch.equal(dropped.intervals, refs.intervals) and dropped.count == refs.count
    x, t, ctx = inputs()
    # a dropped reference still occupies its slot: different from no references at all
    assert (model(x, t, ctx, refs=dropped) - model(x, t, ctx)).abs().max() > 1e-4


def test_clean_token_timestep_is_a_config_choice():
    x, t, ctx = inputs()
    refs = make_refs()
    zero = tiny_model(seed=2, adapter=ac.AdapterConfig(ref_timestep="zero"))
    video = tiny_model(seed=2, adapter=ac.AdapterConfig(ref_timestep="video"))
    assert (zero(x, t, ctx, refs=refs) - video(x, t, ctx, refs=refs)).abs().max() > 1e-4
    # at t = 0 the two agree
    t0 = torch.zeros(1)
    torch.testing.assert_close(zero(x, t0, ctx, refs=refs), video(x, t0, ctx, refs=refs))


def test_too_many_references_or_no_adapter_are_clear_errors(model):
    x, t, ctx = inputs()
    with pytest.raises(ValueError, match="at most 8"):
        model(x, t, ctx, refs=make_refs(r=3).__class__(torch.zeros(1, 9, 16, 8, 8), torch.zeros(1, 9, 1, TINY.text_dim),
                                                       torch.tensor([[[0.0, 1.0]] * 9])))
    with pytest.raises(ValueError, match="no AlcheMinT adapter"):
        tiny_model()(x, t, ctx, refs=make_refs())
    with pytest.raises(ValueError, match="video's size"):
        model(x, t, ctx, refs=make_refs(h=4, w=4))


def test_gradients_reach_the_new_parameters_and_loss_can_cover_video_only(model):
    model.requires_grad_(True)
    x, t, ctx = inputs()
    out = model(x, t, ctx, refs=make_refs())
    out.pow(2).mean().backward()
    assert model.alchemint.ref_index_embedding.grad.abs().sum() > 0
    assert model.alchemint.tag_mlp[0].weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(model):
    model.requires_grad_(True)
    x, t, ctx = inputs()
    refs = make_refs()
    model(x, t, ctx, refs=refs).pow(2).mean().backward()
    g1 = model.alchemint.tag_mlp[0].weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, t, ctx, refs=refs).pow(2).mean().backward()
    torch.testing.assert_close(model.alchemint.tag_mlp[0].weight.grad, g1)


def test_adapter_round_trips_with_lora_under_comfyui_key_names(tmp_path):
    base = tiny_model(seed=4)
    ac.save_model(base, tmp_path / "base.safetensors")
    cfg = ac.AdapterConfig(lora_rank=4, lora_alpha=8.0, max_refs=4, rope_mode="avg")
    trained = ac.load_model(tmp_path / "base.safetensors", adapter=cfg)
    randomize(trained.alchemint, seed=9)
    for n, p in trained.named_parameters():
        if ".lora_" in n:
            p.data.normal_(0, 0.05)
    path = ac.save_adapter(trained, tmp_path / "adapter.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert f"{LORA_PREFIX}blocks.0.self_attn.q.lora_A.weight" in keys
    assert f"{LORA_PREFIX}blocks.1.ffn.2.lora_B.weight" in keys and f"{LORA_PREFIX}blocks.0.ffn.0.alpha" in keys
    assert "alchemint.ref_index_embedding" in keys and '"rope_mode": "avg"' in meta["alchemint_adapter"]
    assert not any(k.startswith("blocks.") for k in keys)  # base weights stay out of the adapter file

    loaded = ac.load_model(tmp_path / "base.safetensors", adapter=path)
    x, t, ctx = inputs()
    refs = make_refs()
    torch.testing.assert_close(loaded(x, t, ctx, refs=refs), trained(x, t, ctx, refs=refs))
    # the LoRA deltas matter: the base alone with the same adapter minus LoRA differs
    assert (loaded(x, t, ctx) - base(x, t, ctx)).abs().max() > 1e-4


def test_adapter_for_another_base_is_refused(tmp_path):
    ac.save_model(tiny_model(seed=4), tmp_path / "base.safetensors")
    other = ac.WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64, freq_dim=32)
    ac.save_model(tiny_model(cfg=other), tmp_path / "other.safetensors")
    m = ac.load_model(tmp_path / "other.safetensors", adapter=ac.AdapterConfig())
    ac.save_adapter(m, tmp_path / "adapter.safetensors")
    with pytest.raises(ac.CheckpointError, match="trained for a base model"):
        ac.load_model(tmp_path / "base.safetensors", adapter=tmp_path / "adapter.safetensors")


def test_full_checkpoint_with_adapter_round_trips(tmp_path):
    m = tiny_model(seed=6, adapter=ac.AdapterConfig(dense_captions=True))
    ac.save_model(m, tmp_path / "full.safetensors")
    loaded = ac.load_model(tmp_path / "full.safetensors")
    assert loaded.alchemint is not None and loaded.alchemint.cfg.dense_captions
    x, t, ctx = inputs()
    torch.testing.assert_close(loaded(x, t, ctx, refs=make_refs()), m(x, t, ctx, refs=make_refs()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("content,match", [
    (b"\x80\x04\x95" + b"\x00" * 64, "pickle"),
    (b"PK\x03\x04" + b"\x00" * 64, "pickle"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "not a valid safetensors"),
    (b"", "not a valid safetensors"),
])
def test_unreadable_checkpoints_get_clear_errors(tmp_path, content, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(ac.CheckpointError, match=match):
        ac.load_model(p)


def test_truncated_and_foreign_checkpoints_get_clear_errors(tmp_path):
    ac.save_model(tiny_model(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ac.CheckpointError, match="truncated"):
        ac.load_model(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ac.CheckpointError, match="not a Wan 2.1 diffusion-model checkpoint"):
        ac.load_model(tmp_path / "vae.safetensors")
    with pytest.raises(ac.CheckpointError, match="no such file"):
        ac.load_model(tmp_path / "missing.safetensors")


def test_a_header_length_ending_in_0x80_is_not_mistaken_for_pickle(tmp_path):
    """A safetensors file whose 8-byte header length starts with byte 0x80 (pickle's magic) must load."""
    from safetensors.torch import save_file
    from alchemint_core.files import SafetensorsFile
    for pad in range(200):
        save_file({"t": torch.zeros(3)}, str(tmp_path / "x.safetensors"), metadata={"p": "x" * pad})
        if (tmp_path / "x.safetensors").read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no padding gave a 0x80 first byte")
    assert torch.equal(SafetensorsFile(tmp_path / "x.safetensors").tensor("t"), torch.zeros(3))
