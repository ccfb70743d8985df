"""Wan 2.2 in the pack's own path: A14B's two experts (high noise, then low noise at the official boundary) and
TI2V 5B on the Wan 2.2 VAE's 48-channel latents. Real-size layouts are checked against the parameter manifests of
the public checkpoints (tests/data, written by tests/make_wan_manifests.py from the official model code); loading,
sampling and training run on tiny random-weight models saved as files without a config header, so their configs
are inferred from tensor shapes as for the real files."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import alchemint_core as ac
from alchemint_core.model.config import (WAN21_1_3B, WAN21_14B, WAN22_A14B, WAN22_TI2V_5B, CheckpointError,
                                         infer_config)
from alchemint_core.model.experts import (WAN22_A14B_SHIFT, WAN22_BOUNDARY, ExpertPair, expert_sigma_range,
                                          load_experts)
from alchemint_core.files import SafetensorsFile
from alchemint_core.sampling.generation import VideoRequest, generate_video, wan_video_model
from alchemint_core.model.latents import WAN21, WAN22, wan_vae
from alchemint_core.model.loading import adapter_config_of, save_adapter
from alchemint_core.sampling.flow import sigma_schedule
from alchemint_core.training.config import TrainConfig
from alchemint_core.training.batches import CachedClips, make_batch
from alchemint_core.training.trainer import Trainer
from conftest import TINY, manifest, randomize
from nodes import bridge
from nodes.models import NO_ADAPTER, SINGLE_MODEL, ModelLoader

# A 5B-layout model in small: 48 latent channels in and out, patch (1, 2, 2); head_dim 128 so the shapes say it all.
TINY_5B = ac.WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=48, out_dim=48, text_dim=32,
                       freq_dim=32)
# another size reading 16 channels
OTHER = ac.WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64, freq_dim=32)


def save_plain(model: ac.WanModel, path) -> None:
    """As the public files are: Wan's key names, no config header (the loader infers the config from shapes)."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("alchemint.")},
              str(path))


def expert(seed: int, cfg=TINY, adapter=None, role=None) -> ac.WanModel:
    model = randomize(ac.WanModel(cfg, adapter), seed).eval()
    model.expert = role
    return model


# ---------------------------------------------------------------------------------------------- real layouts

@pytest.mark.parametrize("name,cfg", [("wan22_t2v_a14b_high_noise_keys.json", WAN22_A14B),
                                      ("wan22_t2v_a14b_low_noise_keys.json", WAN22_A14B),
                                      ("wan22_ti2v_5b_keys.json", WAN22_TI2V_5B)])
def test_wan22_checkpoints_are_recognised_and_built_with_exactly_their_keys_and_shapes(name, cfg):
    keys = manifest(name)
    assert infer_config(keys) == cfg
    with torch.device("meta"):
        model = ac.WanModel(infer_config(keys))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == keys


def test_wan22_configs_are_the_official_ones():
    """wan/configs/wan_t2v_A14B.py and wan_ti2v_5B.py; each A14B expert is laid out as Wan 2.1 14B."""
    assert WAN22_A14B == WAN21_14B
    c = WAN22_TI2V_5B
    assert (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.in_dim, c.out_dim, c.patch_size) == \
        (3072, 14336, 24, 30, 48, 48, (1, 2, 2))
    assert sum(torch.Size(s).numel() for s in manifest("wan22_ti2v_5b_keys.json").values()) == pytest.approx(5.0e9,
                                                                                                         rel=0.01)
    assert (WAN22_BOUNDARY, WAN22_A14B_SHIFT) == (0.875, 12.0)


def test_an_i2v_expert_is_refused_by_its_input_channels():
    keys = dict(manifest("wan22_t2v_a14b_high_noise_keys.json"))
    keys["patch_embedding.weight"] = [5120, 36, 1, 2, 2]  # Wan 2.2 I2V A14B: noise + mask + image channels
    with pytest.raises(CheckpointError, match="Wan 2.2 image-to-video.*Choose the wan2.2_t2v"):
        infer_config(keys)


# ---------------------------------------------------------------------------------------------- latents

def test_the_wan22_latent_format_round_trips_48_channels():
    assert wan_vae(48) == (WAN22, 16) and wan_vae(16) == (WAN21, 8)
    assert len(WAN22.mean) == len(WAN22.std) == 48
    raw = torch.randn(2, 48, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.1
    torch.testing.assert_close(WAN22.denormalize(WAN22.normalize(raw)), raw)
    mean, std = torch.tensor(WAN22.mean).view(1, 48, 1, 1, 1), torch.tensor(WAN22.std).view(1, 48, 1, 1, 1)
    torch.testing.assert_close(WAN22.normalize(mean + 2 * std), torch.full((1, 48, 1, 1, 1), 2.0))
    with pytest.raises(ValueError, match="latents have 16 channels; this latent format has 48"):
        WAN22.normalize(torch.zeros(1, 16, 1, 2, 2))


# ---------------------------------------------------------------------------------------------- A14B pair

@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """Two tiny experts with an adapter each, as files in ComfyUI-like model folders."""
    root = tmp_path_factory.mktemp("wan22")
    folders = {"diffusion_models": [root / "diffusion_models"], bridge.MODEL_FOLDER: [root / "alchemint"]}
    for p in folders.values():
        p[0].mkdir()
    adapter = ac.AdapterConfig(max_refs=2)
    high, low = expert(1, adapter=adapter, role="high"), expert(2, adapter=adapter, role="low")
    dm, al = folders["diffusion_models"][0], folders[bridge.MODEL_FOLDER][0]
    save_plain(high, dm / "wan22_tiny_high_noise.safetensors")
    save_plain(low, dm / "wan22_tiny_low_noise.safetensors")
    save_adapter(high, al / "high.safetensors")
    save_adapter(low, al / "low.safetensors")
    save_plain(expert(3, cfg=OTHER), dm / "other_low_noise.safetensors")
    save_plain(expert(4, cfg=TINY_5B), dm / "wan22_tiny_5b.safetensors")
    save_plain(expert(5, cfg=TINY_5B), dm / "wan22_tiny_5b_copy.safetensors")
    single = expert(6, adapter=adapter)  # an adapter of a single model (Wan 2.1 style) of the experts' layout
    save_adapter(single, al / "single.safetensors")
    saved = dict(bridge.SEARCH_PATHS)
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(folders)
    yield {"dm": dm, "al": al, "high": high, "low": low}
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


def test_the_pair_loads_from_the_expert_files_with_their_adapters(pair_files):
    dm, al = pair_files["dm"], pair_files["al"]
    pair = load_experts(dm / "wan22_tiny_high_noise.safetensors", dm / "wan22_tiny_low_noise.safetensors",
                        al / "high.safetensors", al / "low.safetensors")
    assert isinstance(pair, ExpertPair) and pair.boundary == WAN22_BOUNDARY
    assert pair.high.cfg == pair.low.cfg == TINY and (pair.high.expert, pair.low.expert) == ("high", "low")
    for name in ("high", "low"):
        ours, theirs = getattr(pair, name).state_dict(), pair_files[name].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert "high-noise expert for sigma >= 0.875" in pair.summary()


def test_sampling_runs_the_high_noise_expert_down_to_the_boundary_then_the_low_noise_one(pair_files):
    pair = ExpertPair(pair_files["high"], pair_files["low"])
    ran = []
    hooks = [getattr(pair, n).register_forward_hook(lambda m, a, o, n=n: ran.append(n)) for n in ("high", "low")]
    steps, shift = 12, WAN22_A14B_SHIFT
    ctx, neg = torch.randn(1, 5, TINY.text_dim), torch.randn(1, 3, TINY.text_dim)
    refs = ac.References(torch.randn(1, 2, 16, 8, 8), torch.randn(1, 2, 3, TINY.text_dim),
                         torch.tensor([[[0.0, 1.0], [1.0, 2.0]]], dtype=torch.float64))
    shape = (1, 16, 3, 8, 8)
    try:
        out = ac.generate(pair, ac.Conditioning(ctx, refs=refs), neg, shape, seed=5, steps=steps, shift=shift)
    finally:
        for h in hooks:
            h.remove()
    sigmas = sigma_schedule(steps, shift)
    expected = ["high" if s >= WAN22_BOUNDARY else "low" for s in sigmas[:-1].tolist()]
    assert ran == expected  # one batched guidance call per step, by the expert of that step's noise level
    assert "high" in expected and "low" in expected and expected.index("low") == expected.count("high")
    # the same trajectory from the two experts called directly, each with its own guider
    high_guider = ac.Guider(pair.high, ac.Conditioning(ctx, refs=refs), neg, ac.Guidance(), shape)
    low_guider = ac.Guider(pair.low, ac.Conditioning(ctx, refs=refs), neg, ac.Guidance(), shape)
    x = ac.seeded_noise(shape, 5)
    with torch.no_grad():
        for i in range(steps):
            guider = high_guider if expected[i] == "high" else low_guider
            x = x + (sigmas[i + 1] - sigmas[i]).item() * guider(x, (sigmas[i] * 1000).expand(1))
    torch.testing.assert_close(out, x)


def test_a_batch_across_the_boundary_is_refused(pair_files):
    pair = ExpertPair(pair_files["high"], pair_files["low"])
    x, ctx = torch.randn(2, 16, 1, 4, 4), torch.randn(2, 3, TINY.text_dim)
    with pytest.raises(ValueError, match="straddle the expert boundary 0.875"):
        pair(x, torch.tensor([900.0, 500.0]), ctx)
    high_t, low_t = torch.tensor([875.0, 990.0]), torch.tensor([874.0, 10.0])
    torch.testing.assert_close(pair(x, high_t, ctx), pair.high(x, high_t, ctx))
    torch.testing.assert_close(pair(x, low_t, ctx), pair.low(x, low_t, ctx))


def test_model_loader_loads_the_pair_and_the_5b_with_their_vaes_facts(pair_files):
    handle, = ModelLoader().load("wan22_tiny_high_noise.safetensors", "high.safetensors", "default", False,
                                 "wan22_tiny_low_noise.safetensors", "low.safetensors", 0.9)
    assert isinstance(handle.model, ExpertPair) and handle.model.boundary == 0.9
    assert handle.latent_format == WAN21 and handle.spatial_compression == 8 and handle.max_refs == 2
    five, = ModelLoader().load("wan22_tiny_5b.safetensors", NO_ADAPTER, "default")
    assert isinstance(five.model, ac.WanModel) and five.model.cfg == TINY_5B  # inferred from the shapes
    assert five.latent_format == WAN22 and five.spatial_compression == 16 and five.size_multiple == 32


def test_5b_layout_text_to_video_samples_48_channel_latents_at_16x(pair_files):
    handle = wan_video_model(ac.load_model(pair_files["dm"] / "wan22_tiny_5b.safetensors"))
    req = VideoRequest(torch.randn(1, 4, TINY_5B.text_dim), torch.randn(1, 2, TINY_5B.text_dim), frames=9, fps=24.0,
                       height=64, width=96, steps=3, shift=5.0, seed=1)
    out = generate_video(handle, req)
    assert out.shape == (1, 48, 3, 4, 6)  # 9 frames -> 3 latent frames; 64x96 / 16
    # raw latents: the Wan 2.2 VAE's statistics were applied on the way out
    normed = ac.generate(handle.model, ac.Conditioning(req.positive), req.negative, out.shape, seed=1, steps=3,
                         shift=5.0)
    torch.testing.assert_close(WAN22.normalize(out), normed, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="height 48 must be a positive multiple of 32"):
        generate_video(handle, dataclasses.replace(req, height=48))


# ---------------------------------------------------------------------------------------------- bad input

def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def loader_error(*args) -> str:
    with pytest.raises(ValueError) as info:
        ModelLoader().load(*args)
    return one_line(info.value)


@pytest.mark.parametrize("args,names,fix", [
    (("wan22_tiny_high_noise.safetensors", "high.safetensors", "default", False, "wan22_tiny_low_noise.safetensors",
      "high.safetensors"), r"low_noise_base/low_noise_adapter.*high\.safetensors: this adapter was trained for .*"
                           r"expert high \(loaded base: low\).*the high-noise expert of",
     r"give it as the high-noise expert's adapter"),
    (("wan22_tiny_high_noise.safetensors", "single.safetensors", "default", False, "wan22_tiny_low_noise.safetensors",
      "low.safetensors"), r"base/adapter \(high-noise expert\): single\.safetensors: this adapter was trained for",
     r"a Wan 2.2 expert needs an adapter trained on that expert \(training option expert = 'high'\)"),
    (("wan22_tiny_high_noise.safetensors", "high.safetensors", "default", False, "other_low_noise.safetensors",
      NO_ADAPTER), r"other_low_noise\.safetensors: the low-noise expert is a Wan-layout model \(dim 128",
     r"give the two experts of one model"),
    (("wan22_tiny_high_noise.safetensors", NO_ADAPTER, "default", False, "wan22_tiny_high_noise.safetensors",
      NO_ADAPTER), r"wan22_tiny_high_noise\.safetensors is given as both", r"give the low-noise expert's own file"),
    (("wan22_tiny_low_noise.safetensors", NO_ADAPTER, "default", False, "wan22_tiny_high_noise.safetensors",
      NO_ADAPTER), r"look swapped", r"give the high_noise file as the high-noise expert"),
    (("wan22_tiny_5b.safetensors", NO_ADAPTER, "default", False, "wan22_tiny_5b_copy.safetensors", NO_ADAPTER),
     r"wan22_tiny_5b\.safetensors: Wan 2.2 TI2V 5B is one model", r"load it alone"),
    (("wan22_tiny_high_noise.safetensors", "high.safetensors", "default", False, "wan22_tiny_low_noise.safetensors",
      NO_ADAPTER), r"wan22_tiny_low_noise\.safetensors has no AlcheMinT adapter", r"give an adapter for each expert"),
    (("wan22_tiny_high_noise.safetensors", NO_ADAPTER, "default", False, SINGLE_MODEL, "low.safetensors"),
     r"low_noise_adapter is set but low_noise_base is not", r"set low_noise_base"),
    (("wan22_tiny_5b.safetensors", "single.safetensors", "default"), r"single\.safetensors: this adapter was "
     r"trained for a base model with dim 256.*in_dim 16 \(loaded base: 48\)", r"Load the base it was trained on"),
])
def test_mismatched_experts_and_adapters_get_one_line_naming_the_input_and_the_fix(pair_files, args, names, fix):
    import re
    text = loader_error(*args)
    assert text.startswith("Model Loader: ") or "single.safetensors" in text, text
    assert re.search(names, text), text
    assert re.search(fix, text), text


@pytest.mark.parametrize("made_for,made_role,base,role,names", [
    (WAN21_1_3B, None, WAN22_TI2V_5B, None, r"Wan 2\.1 T2V 1\.3B, not Wan 2\.2 TI2V 5B"),
    (WAN22_TI2V_5B, None, WAN21_14B, None, r"Wan 2\.2 TI2V 5B, not Wan 2\.1 T2V 14B"),
    (WAN21_1_3B, None, WAN22_A14B, "high", r"Wan 2\.1 T2V 1\.3B, not the high-noise expert of Wan 2\.2 A14B"),
    (WAN21_14B, None, WAN22_A14B, "low", r"Wan 2\.1 T2V 14B, not the low-noise expert of Wan 2\.2 A14B"),
    (WAN22_A14B, "high", WAN21_14B, None, r"the high-noise expert of Wan 2\.2 A14B, not Wan 2\.1 T2V 14B"),
])
def test_adapters_of_the_public_bases_name_both_bases(tmp_path, made_for, made_role, base, role, names):
    """The adapter header records its base; the real configs are named in the message (1.3B vs 14B vs 5B, 2.1 vs
    2.2, single model vs expert)."""
    import json as _json
    from alchemint_core.model.loading import base_fingerprint
    small = expert(0, adapter=ac.AdapterConfig(max_refs=1))
    path = save_adapter(small, tmp_path / "a.safetensors",
                        extra_metadata={"alchemint_base": _json.dumps(base_fingerprint(made_for, made_role))})
    with pytest.raises(CheckpointError) as info:
        adapter_config_of(SafetensorsFile(path), base, role)
    import re
    assert re.search(names, one_line(info.value)), str(info.value)
    assert "Load the base it was trained on" in str(info.value)


# ---------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def cache16(tmp_path_factory):
    """A cache of 4-channel tiny-VAE latents (the training fixtures'), for experts of that latent size."""
    from training_fixtures import make_cache
    return make_cache(tmp_path_factory.mktemp("cache16"))


@pytest.fixture(scope="module")
def cache48(tmp_path_factory):
    """A cache of 48-channel latents, as the Wan 2.2 VAE makes (here from a tiny VAE with 48 latent channels)."""
    from alchemint_core.data.cache import CacheConfig, build_cache
    from alchemint_core.encoders import TinyVideoVAE
    from training_fixtures import encoders, write_dataset
    tmp = tmp_path_factory.mktemp("cache48")
    torch.manual_seed(0)
    vae, text = TinyVideoVAE(latent_channels=48, width=16).eval(), encoders()[1]
    build_cache(write_dataset(tmp / "data", n=3), tmp / "cache", vae, text, CacheConfig(num_frames=9, ref_variants=1),
                encoder_id="test48")
    return tmp / "cache"


TINY_EXPERT = ac.WanConfig(dim=128, ffn_dim=128, num_heads=1, num_layers=2, in_dim=4, out_dim=4, text_dim=32,
                           freq_dim=32)


def train(cache, out, base, **kw) -> "ac.training.trainer.TrainResult":
    cfg = {"cache": str(cache), "out": str(out), "base": str(base), "mode": "lora", "steps": 3, "batch_size": 2,
           "adapter": {"max_refs": 4, "lora_rank": 2, "lora_alpha": 2.0}, "lr_new": 1e-3, "warmup_steps": 1,
           "checkpoint_every": 3, "log_every": 1, "seed": 1, **kw}
    return Trainer(TrainConfig.from_dict(cfg), show_bar=False).run()


@pytest.mark.parametrize("role", ["high", "low"])
def test_each_expert_trains_on_its_own_noise_levels_and_its_adapter_loads_only_onto_it(cache16, tmp_path, role):
    lo, hi = expert_sigma_range(role)
    cfg = TrainConfig.from_dict({"cache": str(cache16), "out": str(tmp_path), "base": "x", "expert": role,
                                 "adapter": {"lora_rank": 2}, "batch_size": 2})
    clips = CachedClips(cache16)
    from alchemint_core.model.latents import read_latent_format
    sigmas = torch.cat([make_batch(clips, list(range(k, k + 2)), cfg, read_latent_format(cache16), 0.5, False).sigma
                        for k in range(0, 200, 2)])
    assert lo <= float(sigmas.min()) and float(sigmas.max()) <= hi
    assert float(sigmas.max() - sigmas.min()) > 0.5 * (hi - lo)  # spread over the range, not stuck at one end

    files = {}
    for name, seed in (("high", 1), ("low", 2)):
        files[name] = tmp_path / f"tiny_{name}_noise.safetensors"
        save_plain(expert(seed, cfg=TINY_EXPERT), files[name])
    result = train(cache16, tmp_path / "run", files[role], expert=role)
    with safe_open(str(result.output), "pt") as f:
        assert json.loads(f.metadata()["alchemint_base"])["expert"] == role
    other = "low" if role == "high" else "high"
    tuned = ac.load_model(files[role], adapter=result.output, expert=role)
    assert tuned.alchemint is not None and tuned.expert == role
    with pytest.raises(CheckpointError, match=f"give it as the {role}-noise expert's adapter"):
        ac.load_model(files[other], adapter=result.output, expert=other)
    with pytest.raises(CheckpointError, match=r"expert high \(loaded base: None\)|expert low \(loaded base: None\)"):
        ac.load_model(files[role], adapter=result.output)  # as a single model


def test_both_trained_experts_sample_together(cache16, tmp_path):
    files, adapters = {}, {}
    for name, seed in (("high", 1), ("low", 2)):
        files[name] = tmp_path / f"tiny_{name}_noise.safetensors"
        save_plain(expert(seed, cfg=TINY_EXPERT), files[name])
        adapters[name] = train(cache16, tmp_path / name, files[name], expert=name, steps=2).output
    pair = load_experts(files["high"], files["low"], adapters["high"], adapters["low"])
    ctx = torch.randn(1, 3, TINY_EXPERT.text_dim)
    refs = ac.References(torch.randn(1, 1, 4, 4, 4), torch.randn(1, 1, 2, TINY_EXPERT.text_dim),
                         torch.tensor([[[0.0, 1.0]]], dtype=torch.float64))
    out = ac.generate(pair, ac.Conditioning(ctx, refs=refs), torch.randn(1, 2, TINY_EXPERT.text_dim), (1, 4, 2, 4, 4),
                      seed=0, steps=4, shift=WAN22_A14B_SHIFT)
    assert out.shape == (1, 4, 2, 4, 4) and torch.isfinite(out).all()


def test_a_5b_layout_model_trains_on_48_channel_latents(cache48, tmp_path):
    base = tmp_path / "tiny_5b.safetensors"
    save_plain(expert(7, cfg=TINY_5B), base)
    result = train(cache48, tmp_path / "run", base, steps=3)
    with safe_open(str(result.output), "pt") as f:
        made_for = json.loads(f.metadata()["alchemint_base"])
    assert made_for["in_dim"] == 48 and "expert" not in made_for
    tuned = ac.load_model(base, adapter=result.output)
    plain = ac.load_model(base)
    x, ctx = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 3, 32)
    with torch.no_grad():
        assert (tuned(x, torch.tensor([500.0]), ctx) - plain(x, torch.tensor([500.0]), ctx)).abs().max() > 0
    with pytest.raises(ValueError, match="expert needs base"):
        TrainConfig.from_dict({"cache": "c", "out": "o", "model": {"dim": 64}, "mode": "full",
                               "expert": "high"}).validate()


def test_the_cli_reads_the_two_experts_with_their_adapters(pair_files, capsys):
    from alchemint_core import cli
    dm, al = pair_files["dm"], pair_files["al"]
    code = cli.main(["info", "--model", str(dm / "wan22_tiny_high_noise.safetensors"), "--adapter",
                     str(al / "high.safetensors"), "--low-noise-model", str(dm / "wan22_tiny_low_noise.safetensors"),
                     "--low-noise-adapter", str(al / "low.safetensors")])
    out = capsys.readouterr().out
    assert code == 0 and "high-noise expert for sigma >= 0.875" in out and out.count("AlcheMinT adapter") == 2
    code = cli.main(["info", "--model", str(dm / "wan22_tiny_high_noise.safetensors"), "--adapter",
                     str(al / "low.safetensors"), "--low-noise-model", str(dm / "wan22_tiny_low_noise.safetensors"),
                     "--low-noise-adapter", str(al / "low.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: --model/--adapter (high-noise expert): low.safetensors"), err
    assert "give it as the low-noise expert's adapter" in err
