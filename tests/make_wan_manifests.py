"""Write the parameter manifests of the public Wan 2.2 checkpoints (tests/data/wan22_*_keys.json) from the official
model code and configurations, which is how their files are made (the official repo saves WanModel.state_dict()).

    python tests/make_wan_manifests.py WAN22_CHECKOUT [--check]

WAN22_CHECKOUT is a checkout of github.com/Wan-Video/Wan2.2. Its wan/modules/model.py is imported from there as it
is (never copied here) with two stand-ins: diffusers' ModelMixin/ConfigMixin (only the base class and the config
decorator are used) and the flash-attention module (forward only), then built on the meta device with the
configurations of wan/configs/:
  - wan_t2v_A14B.py: dim 5120, ffn 13824, 40 heads, 40 layers; the high_noise_model and low_noise_model
    sub-folders are two such models (one manifest each, the same keys and shapes);
  - wan_ti2v_5B.py: dim 3072, ffn 14336, 24 heads, 30 layers, with in_dim = out_dim = 48 = z_dim of the Wan 2.2 VAE
    (wan/modules/vae2_2.py: Wan2_2_VAE(z_dim=48); textimage2video.py feeds noise of z_dim channels to the model).
A model_type t2v/ti2v builds the same modules. The same code with the Wan 2.1 T2V configurations reproduces the
Wan 2.1 manifests in tests/data (which came with the project, from the published checkpoints): --check asserts it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from torch import nn

DATA = Path(__file__).parent / "data"
CONFIGS = {  # manifest name -> WanModel keyword arguments (wan/configs/, plus the VAE's channel count)
    "wan22_t2v_a14b_high_noise_keys.json": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "wan22_t2v_a14b_low_noise_keys.json": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "wan22_ti2v_5b_keys.json": dict(model_type="ti2v", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30,
                                    in_dim=48, out_dim=48),
}
WAN21 = {  # the Wan 2.1 T2V configurations, to check the method against the manifests we were given
    "wan21_t2v_1.3b_keys.json": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan21_t2v_14b_keys.json": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}


def official_wan_model(checkout: Path):
    """The official WanModel class, imported from the checkout with stand-ins for what building it does not need."""
    diffusers = types.ModuleType("diffusers")
    config_utils = types.ModuleType("diffusers.configuration_utils")
    config_utils.ConfigMixin = type("ConfigMixin", (), {})
    config_utils.register_to_config = lambda init: init
    modeling = types.ModuleType("diffusers.models.modeling_utils")
    modeling.ModelMixin = nn.Module
    package = types.ModuleType("wan_official")
    package.__path__ = []
    attention = types.ModuleType("wan_official.attention")
    attention.flash_attention = None
    sys.modules.update({"diffusers": diffusers, "diffusers.configuration_utils": config_utils,
                        "diffusers.models": types.ModuleType("diffusers.models"),
                        "diffusers.models.modeling_utils": modeling, "wan_official": package,
                        "wan_official.attention": attention})
    spec = importlib.util.spec_from_file_location("wan_official.model", checkout / "wan" / "modules" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WanModel


def manifest(wan_model, **config) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = wan_model(**config)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of github.com/Wan-Video/Wan2.2")
    parser.add_argument("--check", action="store_true", help="only compare with the files in tests/data")
    args = parser.parse_args()
    wan_model = official_wan_model(args.checkout)
    for name, config in WAN21.items():
        ours = manifest(wan_model, **config)
        assert ours == json.loads((DATA / name).read_text()), f"the official code does not reproduce {name}"
    for name, config in CONFIGS.items():
        ours = manifest(wan_model, **config)
        if args.check:
            assert ours == json.loads((DATA / name).read_text()), f"{name} differs from the official code's"
        else:
            lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in ours.items()]  # the 2.1 files' layout
            (DATA / name).write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"{name}: {len(ours)} tensors, {sum(torch.Size(s).numel() for s in ours.values()) / 1e9:.3f}B parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
