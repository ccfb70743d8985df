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
    from alchemint_core.model.loading import load_model, save_model
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


ROOT_ENTRIES = {"nodes", "alchemint_core", "workflows", "web", "tests", "__init__.py", "requirements.txt",  # design card
                "README.md", "pyproject.toml", "requirements-test.txt", ".ci", "docs", ".gitignore",
                "requirements-curate.txt", "requirements-ray.txt"}  # optional installs (issue 32)


def test_the_root_holds_what_the_design_card_names_and_nothing_else():
    import subprocess
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout:
        entries = {line.split("/")[0] for line in tracked.stdout.splitlines()}
    else:  # not a git clone (an unpacked archive): what is on disk, less caches and run outputs
        entries = {p.name for p in ROOT.iterdir() if p.name not in {".git", "runs", "out", ".pytest_cache",
                                                                   ".hypothesis", "__pycache__"}}
    assert entries == ROOT_ENTRIES, entries ^ ROOT_ENTRIES


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_and_image_in_the_readme_and_docs_resolves():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "tests" / "COMFYUI_E2E.md"]
    checked = 0
    for doc in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{doc.name}: link to {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+\s+(.*)$", file.read_text(), re.M)
                assert anchor in {github_anchor(h) for h in headings}, f"{doc.name}: no heading for {target}"
            checked += 1
    assert checked >= 20  # the README alone links every document and both pictures


def test_the_readme_reads_in_a_few_minutes():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines: move details to a document under docs/"
