"""The pack's skeleton: importable as ComfyUI imports it, core free of ComfyUI, requirements that respect users."""
import importlib.util
import re
import sys
import tomllib

from conftest import ROOT


def load_pack():
    spec = importlib.util.spec_from_file_location("alchemint_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pack_imports_like_comfyui_loads_custom_nodes():
    pack = load_pack()
    assert isinstance(pack.NODE_CLASS_MAPPINGS, dict) and isinstance(pack.NODE_DISPLAY_NAME_MAPPINGS, dict)
    assert (ROOT / pack.WEB_DIRECTORY).is_dir()


def test_core_never_imports_comfyui():
    for path in (ROOT / "alchemint_core").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(comfy|folder_paths|server|nodes)\b", text, re.M), path


def test_requirements_do_not_force_a_torch_version():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip().startswith("torch"):
            assert "==" not in line and "<" not in line
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tool" in meta and "comfy" in meta["tool"] and meta["project"]["name"]


def test_convert_halves_a_full_model_file_and_keeps_its_function(tmp_path):
    import subprocess
    import sys

    import torch

    import alchemint_core as ac
    from alchemint_core.loading import load_model, save_model
    from conftest import ROOT, tiny_model
    model = tiny_model(adapter=ac.AdapterConfig(max_refs=2, rope_mode="avg"))
    save_model(model, tmp_path / "m32.safetensors")
    r = subprocess.run([sys.executable, "-m", "alchemint_core", "convert", str(tmp_path / "m32.safetensors"),
                        str(tmp_path / "m16.safetensors"), "--dtype", "fp16"], capture_output=True, text=True,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    size32, size16 = ((tmp_path / f"m{b}.safetensors").stat().st_size for b in (32, 16))
    assert 0.45 < size16 / size32 < 0.55
    half = load_model(tmp_path / "m16.safetensors")
    assert half.alchemint.cfg.rope_mode == "avg" and half.blocks[0].self_attn.q.weight.dtype == torch.float16
    x, t, ctx = torch.randn(1, 16, 3, 4, 4), torch.tensor([500.0]), torch.randn(1, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(half(x, t, ctx), model(x, t, ctx), atol=5e-3, rtol=5e-3)
    r = subprocess.run([sys.executable, "-m", "alchemint_core", "convert", str(tmp_path / "m16.safetensors"),
                        str(tmp_path / "m16.safetensors")], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "must differ" in r.stderr
