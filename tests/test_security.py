"""Security: weights only through safetensors, no code evaluated from inputs, workflow names confined to ComfyUI's
folders, size limits on JSON inputs. (Markup in tags and timeline values in the real frontend: test_comfyui_e2e.)"""
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

import alchemint_core as ac
from alchemint_core.demo.evaluate import load_prompts
from alchemint_core.files import MAX_TEXT_BYTES
from alchemint_core.training.config import read_config_file
from conftest import ROOT, tiny_model
from nodes import bridge
from nodes.training import input_folder

PYTHON = [p for d in ("alchemint_core", "nodes") for p in (ROOT / d).rglob("*.py")] + [ROOT / "__init__.py"]
JAVASCRIPT = sorted((ROOT / "web").glob("*.js"))
UNSAFE_PY = {
    r"\btorch\.load\s*\(": "torch.load unpickles",
    r"\bpickle\.loads?\s*\(|\bdill\.|\bjoblib\.load": "unpickling",
    r"allow_pickle\s*=\s*True": "numpy unpickling",
    r"weights_only\s*=\s*False": "unpickling",
    r"(?<![.\w])(eval|exec)\s*\(": "evaluating code",
    r"\byaml\.(load|unsafe_load)\s*\(": "YAML object construction (use safe_load)",
    r"shell\s*=\s*True|\bos\.system\s*\(": "a shell",
}
UNSAFE_JS = {
    r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write": "HTML from strings",
    r"(?<![.\w])eval\s*\(|new\s+Function\s*\(|set(Timeout|Interval)\s*\(\s*[\"'`]": "evaluating code",
}


@pytest.mark.parametrize("files, rules", [(PYTHON, UNSAFE_PY), (JAVASCRIPT, UNSAFE_JS)], ids=["python", "javascript"])
def test_no_code_path_unpickles_evaluates_or_builds_html(files, rules):
    assert files
    found = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0] if path.suffix == ".py" else line.split("//")[0]
            found += [f"{path.relative_to(ROOT)}:{n}: {why}" for rule, why in rules.items() if re.search(rule, code)]
    assert found == []


def test_the_rules_catch_what_they_name_and_not_method_names():
    flagged = lambda line, rules: [w for r, w in rules.items() if re.search(r, line)]  # noqa: E731
    for line in ("sd = torch.load(path)", "pickle.loads(b)", "np.load(p, allow_pickle=True)", "eval(text)",
                 "exec(code)", "yaml.load(f)", "subprocess.run(c, shell=True)"):
        assert flagged(line, UNSAFE_PY), line
    for line in ("model.eval()", "yaml.safe_load(f)", "np.load(p, allow_pickle=False)", "torch.save(x, p)"):
        assert not flagged(line, UNSAFE_PY), line
    for line in ("el.innerHTML = tag", "eval(v)", "new Function(v)", "setTimeout('x()', 1)"):
        assert flagged(line, UNSAFE_JS), line
    assert not flagged("message.textContent = text; g.fillText(label, x, y)", UNSAFE_JS)


def test_a_pickle_is_never_unpickled_even_when_named_safetensors(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ac.CheckpointError, match="pickle"):
        ac.load_model(path)
    torch.save({"x": Boom()}, tmp_path / "zip.safetensors")  # the torch zip format
    with pytest.raises(ac.CheckpointError, match="pickle"):
        ac.load_model(tmp_path / "zip.safetensors")
    assert not (tmp_path / "pwned").exists()


@pytest.fixture
def folders(tmp_path):
    saved = {k: list(v) for k, v in bridge.SEARCH_PATHS.items()}
    models = tmp_path / "models" / "diffusion_models"
    (models / "sub").mkdir(parents=True)
    (tmp_path / "input" / "data").mkdir(parents=True)
    ac.save_model(tiny_model(), models / "sub" / "wan.safetensors", with_adapter=False)
    (tmp_path / "outside.safetensors").write_bytes((models / "sub" / "wan.safetensors").read_bytes())
    bridge.SEARCH_PATHS.update({"diffusion_models": [models], "input": [tmp_path / "input"]})
    yield tmp_path
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd",
                                  "{root}/outside.safetensors", "sub/wan.safetensors\0.txt", "", "  ", None, 3])
def test_workflow_file_names_cannot_leave_the_model_folders(folders, name):
    name = name.format(root=folders) if isinstance(name, str) else name
    with pytest.raises(ValueError, match=r"inside models/diffusion_models|nothing chosen") as info:
        bridge.resolve("diffusion_models", name, "Model Loader: base")
    assert "\n" not in str(info.value)


def test_names_inside_the_folders_resolve_and_linked_files_are_followed(folders):
    models = folders / "models" / "diffusion_models"
    assert bridge.resolve("diffusion_models", "sub/wan.safetensors", "base") == models / "sub" / "wan.safetensors"
    (models / "linked.safetensors").symlink_to(folders / "outside.safetensors")  # put there by the user
    assert bridge.resolve("diffusion_models", "linked.safetensors", "base").is_file()
    assert input_folder("data", "Dataset Cache: dataset") == folders / "input" / "data"
    for bad in ("../input/data", str(folders / "input" / "data"), "data/../..", ""):
        with pytest.raises(ValueError, match="input directory"):
            input_folder(bad, "Dataset Cache: dataset")


def test_json_inputs_have_size_limits(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"subjects": [{"tag": "red star", "start": 0, "end": 1}]}] * 40_000))
    assert big.stat().st_size > MAX_TEXT_BYTES
    with pytest.raises(ValueError, match=r"--prompts .*MB, more than the 1024 KB"):
        load_prompts(big)
    cfg = tmp_path / "big.toml"
    cfg.write_text("steps = 1\n" + "# padding\n" * 200_000)
    with pytest.raises(ValueError, match="config file .*more than the 1024 KB"):
        read_config_file(cfg)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ValueError, match="--prompts"):
        load_prompts(nested)
    with pytest.raises(ValueError, match="could not be parsed"):
        read_config_file(nested)
