"""Wan 2.2 on the native path in a real ComfyUI server (issue 34 item 5, native half).

- A14B: two small random-weight experts (Wan 2.1's layout, as the real ones) in ComfyUI's format, an adapter for
  each. Load Diffusion Model x2 -> AlcheMinT Apply (expert high / low) -> Native Conditioning -> Flow Sigmas ->
  Expert Sigmas -> SamplerCustomAdvanced on the high half, then (Disable Noise) on the low half, equals the pack's
  Model Loader (base + low_noise_base, an adapter each) -> Sampler, which switches expert inside its loop.
- TI2V 5B: a small random-weight model with 48 latent channels, which ComfyUI loads as Wan 2.2 (its Wan22 latent
  format); Native Conditioning makes its latent at 16x, and the native path equals the pack's Sampler.

Text is the test-only Word Embedder and, for 48 channels, the test-only Patch VAE 48 (tests/comfyui_test_nodes):
the real umT5 and Wan 2.2 VAE cannot be made small. Both paths read the same CONDITIONING and reference latents.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import alchemint_core as ac
from alchemint_core.model.experts import runs_high
from alchemint_core.model.loading import save_adapter
from alchemint_core.sampling.flow import sigma_schedule
from comfyui_harness import ComfyServer
from conftest import randomize
from test_native_comfyui import (BASE, HERE, S_REF, S_TXT, comfy_checkpoint, error_of, latents, native_guider,
                                 reference_image, run, shared_nodes, tiny_wan_vae, unet)

pytestmark = pytest.mark.comfyui

FIVE_B = ac.WanConfig(**{**BASE.to_dict(), "in_dim": 48, "out_dim": 48})
STEPS, SHIFT, SEED, BOUNDARY = 6, 3.0, 11, 0.875


def adapter_for(model: ac.WanModel, path: Path, expert: str | None, seed: int) -> Path:
    randomize(model.alchemint, seed=seed, scale=0.2)
    model.expert = expert
    return save_adapter(model, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("native22")
    high = randomize(ac.WanModel(BASE, ac.AdapterConfig(max_refs=4)), seed=31)
    low = randomize(ac.WanModel(BASE, ac.AdapterConfig(max_refs=4)), seed=32)
    five = randomize(ac.WanModel(FIVE_B, ac.AdapterConfig(max_refs=4)), seed=33)
    return {"high": comfy_checkpoint(high, d / "wan22_high_tiny.safetensors"),
            "low": comfy_checkpoint(low, d / "wan22_low_tiny.safetensors"),
            "high_adapter": adapter_for(high, d / "adapter_high.safetensors", "high", 34),
            "low_adapter": adapter_for(low, d / "adapter_low.safetensors", "low", 35),
            "five": comfy_checkpoint(five, d / "wan22_ti2v_tiny.safetensors"),
            "five_adapter": adapter_for(five, d / "adapter_ti2v.safetensors", None, 36),
            "vae": tiny_wan_vae(d / "wan_vae_tiny.safetensors"),
            "ref_a": reference_image(d / "ref_a.png", (220, 30, 30), 5),
            "ref_b": reference_image(d / "ref_b.png", (230, 220, 40), 6)}


@pytest.fixture(scope="module")
def server(files):
    links = {"models/diffusion_models/wan22_high_tiny.safetensors": files["high"],
             "models/diffusion_models/wan22_low_tiny.safetensors": files["low"],
             "models/diffusion_models/wan22_ti2v_tiny.safetensors": files["five"],
             "models/alchemint/adapter_high.safetensors": files["high_adapter"],
             "models/alchemint/adapter_low.safetensors": files["low_adapter"],
             "models/alchemint/adapter_ti2v.safetensors": files["five_adapter"],
             "models/vae/wan_vae_tiny.safetensors": files["vae"],
             "input/ref_a.png": files["ref_a"], "input/ref_b.png": files["ref_b"],
             "custom_nodes/alchemint_test_nodes": HERE / "comfyui_test_nodes"}
    with ComfyServer(links=links) as s:
        yield s


def apply(model: str, adapter: str, expert: str) -> dict:
    return {"class_type": "AlcheMinTApply", "inputs": {"model": [model, 0], "adapter": adapter, "expert": expert}}


def conditioning(model: str, width: int, height: int) -> dict:
    return {"class_type": "AlcheMinTNativeConditioning",
            "inputs": {"model": [model, 0], "timeline": ["timeline", 0], "positive": ["pos", 0],
                       "negative": ["neg", 0], "width": width, "height": height, "batch_size": 1,
                       "mode": "as trained", "w_mid": 1.0, "w_edge": -0.4, "edge_offset": 0.0}}


def sampler(noise: str, guide: str, sigmas: list, latent: list) -> dict:
    return {"class_type": "SamplerCustomAdvanced",
            "inputs": {"noise": [noise, 0], "guider": [guide, 0], "sampler": ["euler", 0], "sigmas": sigmas,
                       "latent_image": latent}}


def save(source: str, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": [source, 0], "filename_prefix": prefix}}


def ours(prefix: str, loader_inputs: dict, width: int, height: int) -> dict:
    """The pack's own path: Model Loader -> WeRoPE Conditioner -> Multi-CFG Guider -> Sampler -> Save Latent."""
    return {
        f"{prefix}_model": {"class_type": "AlcheMinTModelLoader",
                            "inputs": {"dtype": "default", "offload_blocks": False, **loader_inputs}},
        f"{prefix}_cond": {"class_type": "AlcheMinTWeRoPEConditioner",
                           "inputs": {"model": [f"{prefix}_model", 0], "timeline": ["timeline", 0],
                                      "positive": ["pos", 0], "mode": "as trained", "w_mid": 1.0, "w_edge": -0.4,
                                      "edge_offset": 0.0}},
        f"{prefix}_guider": {"class_type": "AlcheMinTMultiCFGGuider",
                             "inputs": {"negative": ["neg", 0], "reference_scale": S_REF, "text_scale": S_TXT,
                                        "joint_scale": 0.0, "four_pass": False}},
        f"{prefix}_sample": {"class_type": "AlcheMinTSampler",
                             "inputs": {"model": [f"{prefix}_model", 0], "conditioning": [f"{prefix}_cond", 0],
                                        "guider": [f"{prefix}_guider", 0], "width": width, "height": height,
                                        "steps": STEPS, "shift": SHIFT, "seed": SEED}},
        f"{prefix}_save": save(f"{prefix}_sample", prefix),
    }


def test_a14b_expert_pair_on_the_native_path_equals_the_packs_sampler(server):
    """Each expert with its own adapter, the schedule cut by Expert Sigmas: the pack's latents, step for step."""
    high_steps = int(runs_high(sigma_schedule(STEPS, SHIFT)[:-1], BOUNDARY).sum())
    assert 0 < high_steps < STEPS  # both experts take part
    prompt = {**shared_nodes(),
              "unet_high": unet("wan22_high_tiny.safetensors"), "unet_low": unet("wan22_low_tiny.safetensors"),
              "apply_high": apply("unet_high", "adapter_high.safetensors", "high noise (Wan 2.2 A14B)"),
              "apply_low": apply("unet_low", "adapter_low.safetensors", "low noise (Wan 2.2 A14B)"),
              "ncond": conditioning("apply_high", 48, 32),
              "guider_high": native_guider(("apply_high", 0)), "guider_low": native_guider(("apply_low", 0)),
              "sigmas": {"class_type": "AlcheMinTFlowSigmas", "inputs": {"steps": STEPS, "shift": SHIFT}},
              "split": {"class_type": "AlcheMinTExpertSigmas", "inputs": {"sigmas": ["sigmas", 0],
                                                                          "boundary": BOUNDARY}},
              "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
              "no_noise": {"class_type": "DisableNoise", "inputs": {}},
              "sample_high": sampler("noise", "guider_high", ["split", 0], ["ncond", 3]),
              "sample_low": sampler("no_noise", "guider_low", ["split", 1], ["sample_high", 0]),
              "native_save": save("sample_low", "native22"),
              **ours("pair", {"base": "wan22_high_tiny.safetensors", "adapter": "adapter_high.safetensors",
                              "low_noise_base": "wan22_low_tiny.safetensors",
                              "low_noise_adapter": "adapter_low.safetensors", "boundary": BOUNDARY}, 48, 32),
              # a boundary below every step's noise level: the high-noise expert throughout (no hand-over)
              **ours("alone", {"base": "wan22_high_tiny.safetensors", "adapter": "adapter_high.safetensors",
                               "low_noise_base": "wan22_low_tiny.safetensors",
                               "low_noise_adapter": "adapter_low.safetensors", "boundary": 0.01}, 48, 32)}
    h = run(server, prompt)
    pair, native, alone = (latents(server, h, n) for n in ("pair_save", "native_save", "alone_save"))
    assert pair.shape == native.shape == (1, 16, 3, 4, 6)
    diff = (native - pair).abs().max().item()
    print(f"\nWan 2.2 A14B pair ({high_steps} high + {STEPS - high_steps} low steps): native vs ours max abs diff "
          f"{diff:.3g} (latents up to {pair.abs().max():.3g}); the low-noise expert moves them by "
          f"{(pair - alone).abs().max():.3g}")
    torch.testing.assert_close(native, pair, rtol=1e-4, atol=1e-4)
    assert (pair - alone).abs().max() > 1e-2


def test_ti2v_5b_on_the_native_path_equals_the_packs_sampler(server):
    """48 latent channels: ComfyUI loads the file as Wan 2.2 (its Wan22 latent statistics), Native Conditioning makes
    the latent at 16x, and the latents equal the pack's Sampler on the same file (Wan 2.2 VAE statistics)."""
    prompt = {**shared_nodes(), "vae": {"class_type": "AlcheMinTTestPatchVAE48", "inputs": {}},
              "unet": unet("wan22_ti2v_tiny.safetensors"),
              "apply": apply("unet", "adapter_ti2v.safetensors", "none (Wan 2.1, Wan 2.2 TI2V)"),
              "ncond": conditioning("apply", 64, 32), "guider": native_guider(),
              "sigmas": {"class_type": "AlcheMinTFlowSigmas", "inputs": {"steps": STEPS, "shift": SHIFT}},
              "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
              "sample": sampler("noise", "guider", ["sigmas", 0], ["ncond", 3]),
              "native_save": save("sample", "native5b"),
              **ours("five", {"base": "wan22_ti2v_tiny.safetensors", "adapter": "adapter_ti2v.safetensors"}, 64, 32),
              "plain": {"class_type": "AlcheMinTSampler", "inputs": {
                  "model": ["five_model", 0], "conditioning": ["five_cond", 0], "guider": ["plain_guider", 0],
                  "width": 64, "height": 32, "steps": STEPS, "shift": SHIFT, "seed": SEED}},
              "plain_guider": {"class_type": "AlcheMinTMultiCFGGuider", "inputs": {
                  "negative": ["neg", 0], "reference_scale": 0.0, "text_scale": S_TXT, "joint_scale": 0.0,
                  "four_pass": False}},
              "plain_save": save("plain", "plain5b")}
    h = run(server, prompt)
    five, native, plain = (latents(server, h, n) for n in ("five_save", "native_save", "plain_save"))
    assert five.shape == native.shape == (1, 48, 3, 2, 4)
    diff = (native - five).abs().max().item()
    print(f"\nWan 2.2 TI2V 5B layout: native vs ours max abs diff {diff:.3g} (latents up to {five.abs().max():.3g})")
    torch.testing.assert_close(native, five, rtol=1e-4, atol=1e-4)
    assert (five - plain).abs().max() > 1e-2  # the references reached the model


def test_ti2v_5b_size_must_be_a_multiple_of_32(server):
    prompt = {**shared_nodes(), "vae": {"class_type": "AlcheMinTTestPatchVAE48", "inputs": {}},
              "unet": unet("wan22_ti2v_tiny.safetensors"),
              "apply": apply("unet", "adapter_ti2v.safetensors", "none (Wan 2.1, Wan 2.2 TI2V)"),
              "ncond": conditioning("apply", 48, 32),
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["ncond", 3]}}}
    msg = error_of(run(server, prompt))
    assert msg.startswith("AlcheMinT Native Conditioning: width 48 must be a positive multiple of 32"), msg


def test_an_expert_adapter_on_the_other_expert_is_refused(server):
    prompt = {"unet": unet("wan22_low_tiny.safetensors"),
              "apply": apply("unet", "adapter_high.safetensors", "low noise (Wan 2.2 A14B)"),
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["apply", 0]}}}
    msg = error_of(run(server, prompt))
    assert msg.startswith("AlcheMinT Apply: adapter:") and "expert high (loaded base: low)" in msg, msg
    assert "\n" not in msg.strip()


def test_the_trainer_node_trains_an_adapter_for_one_expert_that_apply_takes_as_that_expert(server):
    """Dataset Cache (ComfyUI-format Wan VAE) -> Trainer with expert 'high noise' on the high-noise expert's file ->
    an adapter marked for that expert: Apply takes it as the high-noise expert and refuses it as the low-noise one."""
    train = {"clip": {"class_type": "AlcheMinTTestWordEmbedder", "inputs": {}},
             "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_vae_tiny.safetensors"}},
             "cache": {"class_type": "AlcheMinTDatasetCache", "inputs": {
                 "dataset": "alchemint_demo_dataset", "vae": ["vae", 0], "clip": ["clip", 0],
                 "cache_name": "wan22_expert_cache", "frames": 9, "width": 32, "height": 32,
                 "reference_variants": 1, "seed": 0}},
             "train": {"class_type": "AlcheMinTTrainer", "inputs": {
                 "cache": ["cache", 0], "base": "wan22_high_tiny.safetensors", "mode": "adapter-only",
                 "output_name": "trained_high_expert", "steps": 2, "batch_size": 1, "learning_rate": 1e-4,
                 "lora_rank": 0, "rope_mode": "werope", "gradient_checkpointing": False, "resume": False, "seed": 0,
                 "expert": "high noise (Wan 2.2 A14B)"}}}
    h = run(server, train)
    assert h["status"]["status_str"] == "success", error_of(h)
    assert "2 steps" in "".join(h["outputs"]["train"]["text"])

    def applied(expert):
        return run(server, {"unet": unet("wan22_high_tiny.safetensors"),
                            "apply": apply("unet", "trained_high_expert.safetensors", expert),
                            "out": {"class_type": "PreviewAny", "inputs": {"source": ["apply", 0]}}})
    assert applied("high noise (Wan 2.2 A14B)")["status"]["status_str"] == "success"
    msg = error_of(applied("low noise (Wan 2.2 A14B)"))
    assert "expert high (loaded base: low)" in msg, msg
