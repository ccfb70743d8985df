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
