"""The native Wan path in a real ComfyUI server (issue 34 items 1-3 and the native half of 7).

One small random-weight Wan 2.1 checkpoint in ComfyUI's format (dim 256 = 2 heads of 128, freq_dim 256, text_dim
4096, keys prefixed model.diffusion_model.), a random AlcheMinT adapter for it and a tiny random Wan 2.1 VAE (ComfyUI's
own WanVAE at dim 8, saved in its format and loaded by the native VAE Loader) are put in the models folders of a
throw-away ComfyUI. Prompts then run ComfyUI's own nodes (Load Diffusion Model, LoRA loader, SamplerCustomAdvanced,
KSampler, DualCFGGuider, Save Latent) around ours, and the saved latents are compared with the pack's own Sampler fed
the same files in the same prompt.

Text: Wan's umT5-XXL cannot be made tiny (ComfyUI builds it from a fixed config), so the CLIP is the test-only
`Word Embedder (test)` node (tests/comfyui_test_nodes): a CLIP stand-in with the interface CLIP Text Encode and the
Reference Loader call, mapping each word to a fixed random 4096-d vector. Both paths read the same CONDITIONING
tensors, made by ComfyUI's own CLIP Text Encode node.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import alchemint_core as ac
from alchemint_core.model.loading import save_adapter
from comfyui_harness import ComfyServer, comfyui_dir
from conftest import randomize

pytestmark = pytest.mark.comfyui

HERE = Path(__file__).resolve().parent
BASE = ac.WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=4096, freq_dim=256)
OTHER = ac.WanConfig(dim=384, ffn_dim=512, num_heads=3, num_layers=2, text_dim=4096, freq_dim=256)
PREFIX = "model.diffusion_model."
TIMELINE = json.dumps({"version": 1, "subjects": [{"tag": "red ring", "start": 0.0, "end": 0.5},
                                                  {"tag": "yellow star", "start": 0.5, "end": 1.125}]})
LORA_RANK, LORA_ALPHA = 4, 2.0
LORA_TARGETS = ("self_attn.q", "self_attn.v", "cross_attn.k", "ffn.0")


def comfy_checkpoint(model: ac.WanModel, path: Path) -> Path:
    """The base weights as ComfyUI saves a Wan diffusion model: plain keys under model.diffusion_model."""
    save_file({PREFIX + k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("alchemint.")},
              str(path))
    return path


def tiny_wan_vae(path: Path) -> Path:
    """ComfyUI's own Wan 2.1 VAE at dim 8 (random weights), saved as its VAE Loader reads it."""
    before = set(sys.modules)
    sys.path.insert(0, str(comfyui_dir()))
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        from comfy.ldm.wan.vae import WanVAE
        vae = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)
        randomize(vae, seed=21, scale=0.2)
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))
    finally:
        sys.path.remove(str(comfyui_dir()))
        root = os.path.realpath(comfyui_dir())
        for name in set(sys.modules) - before:
            if os.path.realpath(getattr(sys.modules[name], "__file__", None) or "").startswith(root + os.sep):
                del sys.modules[name]
    return path


def reference_image(path: Path, colour, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = (rng.random((40, 40, 3)) * 60).astype(np.uint8)
    img[10:30, 12:28] = colour
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("native")
    torch.manual_seed(0)
    base = randomize(ac.WanModel(BASE, ac.AdapterConfig(max_refs=4)), seed=1)
    randomize(base.alchemint, seed=2, scale=0.2)
    out = {"base": comfy_checkpoint(base, d / "wan_tiny.safetensors"),
           "adapter": save_adapter(base, d / "adapter_tiny.safetensors")}
    # The same base with a LoRA: the LoRA file in ComfyUI's key format, and the base with it merged in by hand.
    lora, merged = {}, {k: v.clone() for k, v in base.state_dict().items() if not k.startswith("alchemint.")}
    g = torch.Generator().manual_seed(3)
    for name, module in base.blocks.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(LORA_TARGETS):
            a = torch.randn(LORA_RANK, module.in_features, generator=g) * 0.1
            b = torch.randn(module.out_features, LORA_RANK, generator=g) * 0.1
            key = f"diffusion_model.blocks.{name}"
            lora.update({f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b,
                         f"{key}.alpha": torch.tensor(LORA_ALPHA)})
            merged[f"blocks.{name}.weight"] += (LORA_ALPHA / LORA_RANK) * b @ a
    save_file(lora, str(d / "style_lora.safetensors"))
    out["lora"] = d / "style_lora.safetensors"
    save_file({PREFIX + k: v.contiguous() for k, v in merged.items()}, str(d / "wan_tiny_merged.safetensors"))
    out["merged"] = d / "wan_tiny_merged.safetensors"
    other = randomize(ac.WanModel(OTHER, ac.AdapterConfig(max_refs=4)), seed=4)
    out["other_adapter"] = save_adapter(other, d / "adapter_for_other_base.safetensors")
    with_lora = ac.WanModel(BASE, ac.AdapterConfig(max_refs=4, lora_rank=LORA_RANK, lora_alpha=LORA_ALPHA))
    with_lora.load_state_dict(base.state_dict(), strict=False)
    with_lora.add_lora(LORA_RANK, LORA_ALPHA, with_lora.alchemint.cfg.lora_targets)
    randomize(with_lora.alchemint, seed=7, scale=0.2)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, p in with_lora.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    out["lora_adapter"] = save_adapter(with_lora, d / "adapter_with_lora.safetensors")
    high = randomize(ac.WanModel(BASE, ac.AdapterConfig(max_refs=4)), seed=9)
    high.expert = "high"  # an adapter trained on a Wan 2.2 A14B high-noise expert (Wan 2.1's shapes)
    out["high_adapter"] = save_adapter(high, d / "adapter_high_noise.safetensors")
    wide = ac.WanConfig(**{**BASE.to_dict(), "in_dim": 48, "out_dim": 48, "patch_size": (1, 2, 2)})
    out["adapter_48ch"] = save_adapter(randomize(ac.WanModel(wide, ac.AdapterConfig(max_refs=4)), seed=5),
                                       d / "adapter_48ch.safetensors")
    # The base as Load Diffusion Model's fp8_e4m3fn stores it (every weight but the patch embedding, which ComfyUI
    # keeps in float32), brought back to float32: what an fp8 run computes with.
    fp8 = {k: v if k.startswith("patch_embedding") else v.to(torch.float8_e4m3fn).float()
           for k, v in base.state_dict().items() if not k.startswith("alchemint.")}
    save_file({PREFIX + k: v.contiguous() for k, v in fp8.items()}, str(d / "wan_tiny_fp8_values.safetensors"))
    out["fp8_values"] = d / "wan_tiny_fp8_values.safetensors"
    dense = randomize(ac.WanModel(BASE, ac.AdapterConfig(max_refs=4, dense_captions=True)), seed=10)
    dense.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("alchemint.")},
                          strict=False)
    randomize(dense.alchemint, seed=11, scale=0.2)  # the dense branch's zero-initialised output made random too
    out["dense_adapter"] = save_adapter(dense, d / "adapter_dense.safetensors")
    out["vae"] = tiny_wan_vae(d / "wan_vae_tiny.safetensors")
    out["ref_a"] = reference_image(d / "ref_a.png", (220, 30, 30), 5)
    out["ref_b"] = reference_image(d / "ref_b.png", (230, 220, 40), 6)
    return out


@pytest.fixture(scope="module")
def server(files):
    links = {"models/diffusion_models/wan_tiny.safetensors": files["base"],
             "models/diffusion_models/wan_tiny_merged.safetensors": files["merged"],
             "models/diffusion_models/wan_tiny_fp8_values.safetensors": files["fp8_values"],
             "models/alchemint/adapter_tiny.safetensors": files["adapter"],
             "models/alchemint/adapter_for_other_base.safetensors": files["other_adapter"],
             "models/alchemint/adapter_48ch.safetensors": files["adapter_48ch"],
             "models/alchemint/adapter_high_noise.safetensors": files["high_adapter"],
             "models/alchemint/adapter_with_lora.safetensors": files["lora_adapter"],
             "models/alchemint/adapter_dense.safetensors": files["dense_adapter"],
             "models/loras/style_lora.safetensors": files["lora"],
             "models/vae/wan_vae_tiny.safetensors": files["vae"],
             "input/ref_a.png": files["ref_a"], "input/ref_b.png": files["ref_b"],
             "custom_nodes/alchemint_test_nodes": HERE / "comfyui_test_nodes"}
    with ComfyServer(links=links) as s:
        yield s


# -- prompts -----------------------------------------------------------------------------------------------------
def shared_nodes(width=48, height=32, frames=9) -> dict:
    """Text encoder, VAE, two references on a timeline and the captions: what both paths read."""
    return {
        "clip": {"class_type": "AlcheMinTTestWordEmbedder", "inputs": {}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_vae_tiny.safetensors"}},
        "img_a": {"class_type": "LoadImage", "inputs": {"image": "ref_a.png"}},
        "img_b": {"class_type": "LoadImage", "inputs": {"image": "ref_b.png"}},
        "ref_a": {"class_type": "AlcheMinTReferenceLoader",
                  "inputs": {"image": ["img_a", 0], "tag": "red ring", "vae": ["vae", 0], "clip": ["clip", 0]}},
        "ref_b": {"class_type": "AlcheMinTReferenceLoader",
                  "inputs": {"image": ["img_b", 0], "tag": "yellow star", "vae": ["vae", 0], "clip": ["clip", 0],
                             "references": ["ref_a", 0]}},
        "timeline": {"class_type": "AlcheMinTIntervalTimeline",
                     "inputs": {"references": ["ref_b", 0], "frames": frames, "fps": 8.0, "timeline": TIMELINE}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ring then a yellow star on grass",
                                                           "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["clip", 0]}},
    }


def native_nodes(model_from, width=48, height=32, adapter="adapter_tiny.safetensors") -> dict:
    return {
        "apply": {"class_type": "AlcheMinTApply", "inputs": {"model": model_from, "adapter": adapter}},
        "ncond": {"class_type": "AlcheMinTNativeConditioning",
                  "inputs": {"model": ["apply", 0], "timeline": ["timeline", 0], "positive": ["pos", 0],
                             "negative": ["neg", 0], "width": width, "height": height, "batch_size": 1,
                             "mode": "as trained", "w_mid": 1.0, "w_edge": -0.4, "edge_offset": 0.0}},
    }


def unet(name: str = "wan_tiny.safetensors", dtype: str = "default") -> dict:
    """ComfyUI's Load Diffusion Model."""
    return {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": dtype}}


def native_guider(model=("apply", 0)) -> dict:
    """The native Multi-CFG guider on Native Conditioning's positive and negative, at the parity scales."""
    return {"class_type": "AlcheMinTNativeMultiCFGGuider",
            "inputs": {"model": list(model), "positive": ["ncond", 0], "negative": ["ncond", 1],
                       "reference_scale": S_REF, "text_scale": S_TXT, "joint_scale": 0.0, "four_pass": False}}


def custom_advanced(guider, steps, shift, seed, prefix) -> dict:
    return {
        f"{prefix}_sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        f"{prefix}_sigmas": {"class_type": "AlcheMinTFlowSigmas", "inputs": {"steps": steps, "shift": shift}},
        f"{prefix}_noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        f"{prefix}_sample": {"class_type": "SamplerCustomAdvanced",
                             "inputs": {"noise": [f"{prefix}_noise", 0], "guider": guider,
                                        "sampler": [f"{prefix}_sampler", 0], "sigmas": [f"{prefix}_sigmas", 0],
                                        "latent_image": ["ncond", 3]}},
        f"{prefix}_save": {"class_type": "SaveLatent", "inputs": {"samples": [f"{prefix}_sample", 0],
                                                                   "filename_prefix": prefix}},
    }


def ours_nodes(base, steps, shift, seed, ref_scale, text_scale, width=48, height=32,
               adapter="adapter_tiny.safetensors") -> dict:
    return {
        "ours_model": {"class_type": "AlcheMinTModelLoader",
                       "inputs": {"base": base, "adapter": adapter, "dtype": "default",
                                  "offload_blocks": False}},
        "ours_cond": {"class_type": "AlcheMinTWeRoPEConditioner",
                      "inputs": {"model": ["ours_model", 0], "timeline": ["timeline", 0], "positive": ["pos", 0],
                                 "mode": "as trained", "w_mid": 1.0, "w_edge": -0.4, "edge_offset": 0.0}},
        "ours_guider": {"class_type": "AlcheMinTMultiCFGGuider",
                        "inputs": {"negative": ["neg", 0], "reference_scale": ref_scale, "text_scale": text_scale,
                                   "joint_scale": 0.0, "four_pass": False}},
        "ours_sample": {"class_type": "AlcheMinTSampler",
                        "inputs": {"model": ["ours_model", 0], "conditioning": ["ours_cond", 0],
                                   "guider": ["ours_guider", 0], "width": width, "height": height, "steps": steps,
                                   "shift": shift, "seed": seed}},
        "ours_save": {"class_type": "SaveLatent", "inputs": {"samples": ["ours_sample", 0], "filename_prefix": "ours"}},
    }


def run(server: ComfyServer, prompt: dict) -> dict:
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    return server.wait_history(body["prompt_id"], timeout=600)


def error_of(history: dict) -> str:
    assert history["status"]["status_str"] == "error", history["status"]
    err = next(m[1] for m in history["status"]["messages"] if m[0] == "execution_error")
    return f"{err['exception_message']}" if err["exception_type"].endswith("ValueError") else \
        f"{err['exception_type']}: {err['exception_message']}\n{''.join(err.get('traceback', []))[-3000:]}"


def latents(server: ComfyServer, history: dict, node: str) -> torch.Tensor:
    if history["status"]["status_str"] != "success":
        pytest.fail(f"the prompt failed: {error_of(history)}")
    info = history["outputs"][node]["latents"][0]
    path = server.base / "output" / info["subfolder"] / info["filename"]
    return load_file(str(path))["latent_tensor"]


# -- parity ------------------------------------------------------------------------------------------------------
STEPS, SHIFT, SEED, S_REF, S_TXT = 4, 3.0, 7, 2.0, 3.0


def test_native_path_equals_the_packs_sampler(server):
    """Load Diffusion Model -> AlcheMinT Apply -> SamplerCustomAdvanced (Euler, the native Multi-CFG guider, the
    pack's schedule) gives the AlcheMinT Sampler's latents; so does ComfyUI's own DualCFGGuider fed Native
    Conditioning's three conditionings."""
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              "unet": unet(),
              "guider": native_guider(),
              "dual": {"class_type": "DualCFGGuider",
                       "inputs": {"model": ["apply", 0], "cond1": ["ncond", 0], "cond2": ["ncond", 2],
                                  "negative": ["ncond", 1], "cfg_conds": S_TXT, "cfg_cond2_negative": S_REF,
                                  "style": "regular"}},
              **custom_advanced(["guider", 0], STEPS, SHIFT, SEED, "native"),
              **custom_advanced(["dual", 0], STEPS, SHIFT, SEED, "dual"),
              **ours_nodes("wan_tiny.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT)}
    h = run(server, prompt)
    ours, native, dual = (latents(server, h, n) for n in ("ours_save", "native_save", "dual_save"))
    assert ours.shape == native.shape == (1, 16, 3, 4, 6)
    diff, dual_diff = (native - ours).abs().max().item(), (dual - ours).abs().max().item()
    print(f"\nnative vs ours: max abs diff {diff:.3g} (latents up to {ours.abs().max():.3g}); "
          f"DualCFGGuider {dual_diff:.3g}")
    torch.testing.assert_close(native, ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dual, ours, rtol=1e-4, atol=1e-4)
    # the references matter: a run without them differs by far more than the tolerance
    assert (ours - latents(server, run(server, {**prompt, "ours_guider": {**prompt["ours_guider"], "inputs": {
        **prompt["ours_guider"]["inputs"], "reference_scale": 0.0}}}), "ours_save")).abs().max() > 1e-2


def test_cfg_guider_and_the_four_pass_guider_equal_the_packs_sampler(server):
    """ComfyUI's CFGGuider on Native Conditioning's positive/negative is the pack's guidance with equal reference and
    text scales; the native guider's 4-pass form equals the pack's 4-pass form."""
    def ours(prefix, ref, text, joint=None):
        return {f"{prefix}_guider": {"class_type": "AlcheMinTMultiCFGGuider", "inputs": {
                    "negative": ["neg", 0], "reference_scale": ref, "text_scale": text, "joint_scale": joint or 0.0,
                    "four_pass": joint is not None}},
                f"{prefix}_sample": {"class_type": "AlcheMinTSampler", "inputs": {
                    "model": ["ours_model", 0], "conditioning": ["ours_cond", 0], "guider": [f"{prefix}_guider", 0],
                    "width": 48, "height": 32, "steps": STEPS, "shift": SHIFT, "seed": SEED}},
                f"{prefix}_save": {"class_type": "SaveLatent", "inputs": {"samples": [f"{prefix}_sample", 0],
                                                                           "filename_prefix": prefix}}}
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              **ours_nodes("wan_tiny.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT),
              "unet": unet(),
              "cfg": {"class_type": "CFGGuider", "inputs": {"model": ["apply", 0], "positive": ["ncond", 0],
                                                            "negative": ["ncond", 1], "cfg": S_TXT}},
              "four": {"class_type": "AlcheMinTNativeMultiCFGGuider",
                       "inputs": {"model": ["apply", 0], "positive": ["ncond", 0], "negative": ["ncond", 1],
                                  "reference_scale": S_REF, "text_scale": S_TXT, "joint_scale": 1.5,
                                  "four_pass": True}},
              **custom_advanced(["cfg", 0], STEPS, SHIFT, SEED, "ncfg"),
              **custom_advanced(["four", 0], STEPS, SHIFT, SEED, "nfour"),
              **ours("ocfg", S_TXT, S_TXT), **ours("ofour", S_REF, S_TXT, 1.5)}
    h = run(server, prompt)
    for native, own in (("ncfg_save", "ocfg_save"), ("nfour_save", "ofour_save")):
        a, b = latents(server, h, native), latents(server, h, own)
        print(f"\n{native} vs {own}: max abs diff {(a - b).abs().max():.3g}")
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (latents(server, h, "ocfg_save") - latents(server, h, "ofour_save")).abs().max() > 1e-2


def test_comfyui_lora_loader_equals_our_loader_with_the_lora_merged(server):
    """LoraLoaderModelOnly's LoRA on the native model gives the latents of our loader given the same LoRA merged
    into the base file."""
    prompt = {**shared_nodes(), **native_nodes(["lora", 0]),
              "unet": unet(),
              "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["unet", 0], "strength_model": 1.0,
                                                                       "lora_name": "style_lora.safetensors"}},
              "guider": native_guider(),
              **custom_advanced(["guider", 0], STEPS, SHIFT, SEED, "native"),
              **ours_nodes("wan_tiny_merged.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT),
              "plain": {"class_type": "AlcheMinTSampler", "inputs": {
                  "model": ["plain_model", 0], "conditioning": ["ours_cond", 0], "guider": ["ours_guider", 0],
                  "width": 48, "height": 32, "steps": STEPS, "shift": SHIFT, "seed": SEED}},
              "plain_model": {"class_type": "AlcheMinTModelLoader",
                              "inputs": {"base": "wan_tiny.safetensors", "adapter": "adapter_tiny.safetensors",
                                         "dtype": "default", "offload_blocks": False}},
              "plain_save": {"class_type": "SaveLatent", "inputs": {"samples": ["plain", 0],
                                                                     "filename_prefix": "plain"}}}
    h = run(server, prompt)
    ours, native, plain = (latents(server, h, n) for n in ("ours_save", "native_save", "plain_save"))
    diff = (native - ours).abs().max().item()
    print(f"\nwith LoRA, native vs ours (merged): max abs diff {diff:.3g}; the LoRA moves latents by "
          f"{(ours - plain).abs().max():.3g}")
    torch.testing.assert_close(native, ours, rtol=1e-4, atol=1e-4)
    assert (ours - plain).abs().max() > 1e-2  # the LoRA is not a no-op


def test_fp8_weights_of_load_diffusion_model_are_what_the_native_path_computes_with(server):
    """Load Diffusion Model with weight_dtype fp8_e4m3fn: ComfyUI's layers cast their fp8 weights per call, and the
    hosted forward runs through those layers, so the latents equal the pack's Sampler on the same weights rounded
    to fp8 (and differ from the full-precision run by far more)."""
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              "unet": unet(dtype="fp8_e4m3fn"),
              "guider": native_guider(),
              **custom_advanced(["guider", 0], STEPS, SHIFT, SEED, "native"),
              **ours_nodes("wan_tiny_fp8_values.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT),
              "full": {"class_type": "AlcheMinTSampler", "inputs": {
                  "model": ["full_model", 0], "conditioning": ["ours_cond", 0], "guider": ["ours_guider", 0],
                  "width": 48, "height": 32, "steps": STEPS, "shift": SHIFT, "seed": SEED}},
              "full_model": {"class_type": "AlcheMinTModelLoader",
                             "inputs": {"base": "wan_tiny.safetensors", "adapter": "adapter_tiny.safetensors",
                                        "dtype": "default", "offload_blocks": False}},
              "full_save": {"class_type": "SaveLatent", "inputs": {"samples": ["full", 0], "filename_prefix": "full"}}}
    h = run(server, prompt)
    ours, native, full = (latents(server, h, n) for n in ("ours_save", "native_save", "full_save"))
    print(f"\nfp8 weights, native vs ours on fp8-rounded weights: max abs diff {(native - ours).abs().max():.3g}; "
          f"fp8 rounding moves latents by {(ours - full).abs().max():.3g}")
    torch.testing.assert_close(native, ours, rtol=1e-4, atol=1e-4)
    assert (ours - full).abs().max() > 1e-2


def test_an_adapters_own_lora_is_applied_as_comfyui_lora_patches(server):
    """An adapter trained with LoRA: Apply patches its deltas onto the native model's weights; the latents equal
    our loader's, which attaches the same deltas to its own layers."""
    prompt = {**shared_nodes(), **native_nodes(["unet", 0], adapter="adapter_with_lora.safetensors"),
              "unet": unet(),
              "guider": native_guider(),
              **custom_advanced(["guider", 0], STEPS, SHIFT, SEED, "native"),
              **ours_nodes("wan_tiny.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT,
                           adapter="adapter_with_lora.safetensors")}
    h = run(server, prompt)
    ours, native = latents(server, h, "ours_save"), latents(server, h, "native_save")
    print(f"\nadapter with its own LoRA, native vs ours: max abs diff {(native - ours).abs().max():.3g}")
    torch.testing.assert_close(native, ours, rtol=1e-4, atol=1e-4)


def test_ksampler_with_another_sampler_and_plain_conditioning(server):
    """KSampler (dpmpp_2m, simple schedule) samples the applied model from Native Conditioning; the same model
    with plain CLIP Text Encode conditioning (no references) is the native model unchanged."""
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              "unet": unet(),
              "ks": {"class_type": "KSampler", "inputs": {
                  "model": ["apply", 0], "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "dpmpp_2m",
                  "scheduler": "simple", "positive": ["ncond", 0], "negative": ["ncond", 1],
                  "latent_image": ["ncond", 3], "denoise": 1.0}},
              "ks_save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "ks"}},
              "plain_applied": {"class_type": "KSampler", "inputs": {
                  "model": ["apply", 0], "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "dpmpp_2m",
                  "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
                  "latent_image": ["ncond", 3], "denoise": 1.0}},
              "plain_native": {"class_type": "KSampler", "inputs": {
                  "model": ["unet", 0], "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "dpmpp_2m",
                  "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
                  "latent_image": ["ncond", 3], "denoise": 1.0}},
              "pa_save": {"class_type": "SaveLatent", "inputs": {"samples": ["plain_applied", 0],
                                                                  "filename_prefix": "pa"}},
              "pn_save": {"class_type": "SaveLatent", "inputs": {"samples": ["plain_native", 0],
                                                                  "filename_prefix": "pn"}},
              "ncond2": {"class_type": "AlcheMinTNativeConditioning",  # a batch of two videos
                         "inputs": {**native_nodes(["unet", 0])["ncond"]["inputs"], "batch_size": 2}},
              "ks2": {"class_type": "KSampler", "inputs": {
                  "model": ["apply", 0], "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "dpmpp_2m",
                  "scheduler": "simple", "positive": ["ncond2", 0], "negative": ["ncond2", 1],
                  "latent_image": ["ncond2", 3], "denoise": 1.0}},
              "ks2_save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks2", 0], "filename_prefix": "ks2"}}}
    h = run(server, prompt)
    ks, pa, pn, ks2 = (latents(server, h, n) for n in ("ks_save", "pa_save", "pn_save", "ks2_save"))
    assert ks.shape == (1, 16, 3, 4, 6) and torch.isfinite(ks).all()
    assert ks2.shape == (2, 16, 3, 4, 6) and torch.isfinite(ks2).all() and (ks2[0] - ks2[1]).abs().max() > 1e-2
    assert torch.equal(pa, pn)
    assert (ks - pa).abs().max() > 1e-2  # the references reached the model


CAPTIONS = json.dumps({"version": 1, "captions": [{"text": "the ring rolls in", "start": 0.0, "end": 0.5},
                                                  {"text": "a star spins", "start": 0.5, "end": 1.125}]})


def test_timed_captions_on_the_native_path_equal_the_packs_sampler(server):
    """Timed Captions into Native Conditioning (riding on positive only) give the latents of the WeRoPE Conditioner
    with the same captions through the pack's Sampler, for an adapter trained with dense captions."""
    captions = {"class_type": "AlcheMinTTimedCaptions", "inputs": {"clip": ["clip", 0], "frames": 9, "fps": 8.0,
                                                                    "captions": CAPTIONS}}
    prompt = {**shared_nodes(), **native_nodes(["unet", 0], adapter="adapter_dense.safetensors"),
              "captions": captions,
              "unet": unet(),
              "guider": native_guider(),
              **custom_advanced(["guider", 0], STEPS, SHIFT, SEED, "native"),
              **ours_nodes("wan_tiny.safetensors", STEPS, SHIFT, SEED, S_REF, S_TXT,
                           adapter="adapter_dense.safetensors")}
    prompt["ncond"]["inputs"]["timed_captions"] = ["captions", 0]
    with_captions = {**prompt, "ours_cond": {**prompt["ours_cond"], "inputs": {
        **prompt["ours_cond"]["inputs"], "timed_captions": ["captions", 0]}}}
    h = run(server, with_captions)
    ours, native = latents(server, h, "ours_save"), latents(server, h, "native_save")
    h0 = run(server, {**prompt, "ncond": native_nodes(["unet", 0], adapter="adapter_dense.safetensors")["ncond"]})
    without = latents(server, h0, "native_save")
    print(f"\ntimed captions, native vs ours: max abs diff {(native - ours).abs().max():.3g}; the captions move "
          f"latents by {(native - without).abs().max():.3g}")
    torch.testing.assert_close(native, ours, rtol=1e-4, atol=1e-4)
    assert (native - without).abs().max() > 1e-2


def test_timed_captions_on_a_model_without_a_dense_branch_are_refused(server):
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              "captions": {"class_type": "AlcheMinTTimedCaptions", "inputs": {
                  "clip": ["clip", 0], "frames": 9, "fps": 8.0, "captions": CAPTIONS}},
              "unet": unet(),
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["ncond", 3]}}}
    prompt["ncond"]["inputs"]["timed_captions"] = ["captions", 0]
    msg = error_of(run(server, prompt))
    assert msg.startswith("AlcheMinT Native Conditioning: timed_captions: this model has no dense-caption branch") \
        and "disconnect the Timed Captions node" in msg and "\n" not in msg.strip(), msg
    prompt["captions"]["inputs"]["frames"] = 17  # laid out on another clip than the timeline's
    prompt["unet"] = {**prompt["unet"]}
    prompt["apply"]["inputs"]["adapter"] = "adapter_dense.safetensors"
    msg = error_of(run(server, prompt))
    assert "timed_captions are laid out on 17 frames at 8 fps but the Interval Timeline's clip is 9 frames" in msg, msg


# -- bad input ---------------------------------------------------------------------------------------------------
def test_adapter_for_another_base_is_refused_by_apply(server):
    prompt = {"unet": unet(),
              "apply": {"class_type": "AlcheMinTApply", "inputs": {"model": ["unet", 0],
                                                                   "adapter": "adapter_for_other_base.safetensors"}},
              "ks": {"class_type": "PreviewAny", "inputs": {"source": ["apply", 0]}}}
    msg = error_of(run(server, prompt))
    assert msg.startswith("AlcheMinT Apply: adapter:") and "dim 384 (loaded base: 256)" in msg, msg
    assert "\n" not in msg.strip()


def test_references_on_a_model_without_apply_are_refused(server):
    prompt = {**shared_nodes(), **native_nodes(["unet", 0]),
              "unet": unet(),
              "ks": {"class_type": "KSampler", "inputs": {
                  "model": ["unet", 0], "seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
                  "scheduler": "simple", "positive": ["ncond", 0], "negative": ["ncond", 1],
                  "latent_image": ["ncond", 3], "denoise": 1.0}},
              "ks_save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "bad"}}}
    msg = error_of(run(server, prompt))
    assert "AlcheMinT Apply" in msg and "references" in msg and "\n" not in msg.strip(), msg


def test_adapter_for_a_wan_2_2_ti2v_layout_is_refused_by_apply(server):
    """An adapter made for 48-channel latents (Wan 2.2 TI2V's VAE) on a Wan 2.1 model."""
    prompt = {"unet": unet(),
              "apply": {"class_type": "AlcheMinTApply", "inputs": {"model": ["unet", 0],
                                                                   "adapter": "adapter_48ch.safetensors"}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["apply", 0]}}}
    msg = error_of(run(server, prompt))
    assert msg.startswith("AlcheMinT Apply: adapter:") and "in_dim 48 (loaded base: 16)" in msg, msg


def test_a_wan_2_2_expert_adapter_needs_its_expert(server):
    """Wan 2.2 A14B's experts have Wan 2.1 14B's shapes, so the adapter records its expert and Apply's `expert` input
    says which one the MODEL is: a high-noise adapter on a single (Wan 2.1) model is refused, as that expert it
    applies."""
    def prompt(expert):
        return {"unet": unet(),
                "apply": {"class_type": "AlcheMinTApply", "inputs": {
                    "model": ["unet", 0], "adapter": "adapter_high_noise.safetensors", "expert": expert}},
                "out": {"class_type": "PreviewAny", "inputs": {"source": ["apply", 0]}}}
    msg = error_of(run(server, prompt("none (Wan 2.1, Wan 2.2 TI2V)")))
    assert msg.startswith("AlcheMinT Apply: adapter:") and "expert high (loaded base: None)" in msg, msg
    assert run(server, prompt("high noise (Wan 2.2 A14B)"))["status"]["status_str"] == "success"
    msg = error_of(run(server, prompt("low noise (Wan 2.2 A14B)")))
    assert "expert high (loaded base: low)" in msg, msg


# -- in-process: the hosted forward on ComfyUI's own WanModel, and what Apply refuses ---------------------------
@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules imported from COMFYUI_DIR (our nodes package first: ComfyUI has a nodes.py of its own);
    afterwards every module imported from there is forgotten and the path removed."""
    import nodes.native  # noqa: F401
    before = set(sys.modules)
    root = str(comfyui_dir())
    sys.path.insert(0, root)
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        import comfy.ldm.wan.model
        import comfy.model_patcher
        import comfy.ops
        yield comfy
    finally:
        sys.path.remove(root)
        for name in set(sys.modules) - before:
            if os.path.realpath(getattr(sys.modules[name], "__file__", None) or "").startswith(
                    os.path.realpath(root) + os.sep):
                del sys.modules[name]


def comfy_wan(comfy, cfg: ac.WanConfig, **kw):
    return comfy.ldm.wan.model.WanModel(dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                                        num_heads=cfg.num_heads, num_layers=cfg.num_layers, cross_attn_norm=True,
                                        operations=comfy.ops.disable_weight_init, dtype=torch.float32, **kw)


def test_hosted_forward_on_comfyuis_wan_equals_our_model(comfy):
    """alchemint_core.model.hosted through ComfyUI's WanModel modules = our WanModel, same weights: references with
    WeRoPE, a reference slot absent in one sample (key mask), padded text (text key mask), and no references."""
    from alchemint_core.model.hosted import HostedWan, host_config
    from alchemint_core.model.references import References
    cfg = ac.WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64, freq_dim=32)
    ours = randomize(ac.WanModel(cfg, ac.AdapterConfig(max_refs=4)), seed=3).eval()
    theirs = comfy_wan(comfy, cfg)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("alchemint.")})
    assert host_config(theirs) == cfg
    hosted = HostedWan(theirs, ours.alchemint)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 16, 3, 8, 6, generator=g), torch.randn(2, 7, 64, generator=g)
    t = torch.tensor([900.0, 300.0])
    refs = References(torch.randn(2, 2, 16, 8, 6, generator=g), torch.randn(2, 2, 3, 64, generator=g),
                      torch.tensor([[[0.0, 1.0], [1.0, 2.5]]] * 2, dtype=torch.float64),
                      present=torch.tensor([[True, True], [True, False]]))
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    with torch.no_grad():
        for kw in ({"refs": refs}, {"refs": replace_present(refs)}, {"refs": refs, "context_mask": mask}, {}):
            torch.testing.assert_close(hosted(x, t, ctx, **kw), ours(x, t, ctx, **kw), rtol=1e-4, atol=1e-4)
        assert (ours(x, t, ctx, refs=refs) - ours(x, t, ctx)).abs().max() > 1e-2


def replace_present(refs):
    from dataclasses import replace
    return replace(refs, present=torch.ones_like(refs.present))


def patcher(comfy, diffusion_model):
    holder = torch.nn.Module()
    holder.diffusion_model = diffusion_model
    return comfy.model_patcher.ModelPatcher(holder, load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def test_apply_refuses_a_model_that_is_not_wan_text_to_video(comfy):
    from nodes.native import AlcheMinTApply
    cfg = ac.WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=1, text_dim=64, freq_dim=32)
    cases = [(patcher(comfy, torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3))), "this is not a Wan model"),
             (patcher(comfy, comfy_wan(comfy, cfg, model_type="i2v", in_dim=36)), "image-to-video"),
             (object(), "model is not a diffusion MODEL")]
    for model, what in cases:
        with pytest.raises(ValueError) as err:
            AlcheMinTApply().apply(model, "adapter_tiny.safetensors")
        msg = str(err.value)
        assert msg.startswith("AlcheMinT Apply:") and what in msg and "load" in msg.lower() and "\n" not in msg, msg


def test_native_nodes_refuse_a_model_without_apply(comfy):
    from nodes.native import NativeConditioning
    cfg = ac.WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=1, text_dim=64, freq_dim=32)
    plain = patcher(comfy, comfy_wan(comfy, cfg))
    with pytest.raises(ValueError) as err:
        NativeConditioning().encode(plain, None, [], [], 48, 32, 1, "as trained", 1.0, -0.4, 0.0)
    msg = str(err.value)
    assert msg.startswith("AlcheMinT Native Conditioning: this MODEL has no AlcheMinT adapter; put AlcheMinT Apply") \
        and "\n" not in msg, msg
