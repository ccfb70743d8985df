"""The benchmark runner's ComfyUI models (issue 33): `--model NAME=comfyui:SPEC.toml` generates through a running
ComfyUI — Wan + adapter through the pack's nodes with ComfyUI's own VAE and text encoder, the demo model the same way,
Wan alone for the prompt-only baseline. Without a server: the spec file's checks, the graphs, the refusals. With a real
ComfyUI (COMFYUI_DIR): the demo through the server makes the videos the in-process demo makes and scores the same, and
the Wan graphs pass the server's own node and file lists (its umT5 text encoder cannot be made tiny, so they are
checked, not run)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alchemint_core import cli
from alchemint_core.data.dataset import DatasetError, read_video
from alchemint_core.sampling.guidance import Guidance
from alchemint_core.scoring.benchmark import load_benchmark
from alchemint_core.scoring.comfyui_client import ComfyUIClient
from alchemint_core.scoring.comfyui_graph import (OUTPUT_NODE, GraphSubject, graph_problems, item_graph, load_spec,
                                                  node)
from alchemint_core.scoring.runner import Sampling, check_comfyui, check_models, parse_models
from alchemint_core.synthetic import render_reference
from alchemint_core.demo.pipeline import appearance_of

WAN_FILES = {"diffusion_models": ["wan21_tiny.safetensors"], "text_encoders": ["umt5_tiny.safetensors"],
             "vae": ["wan_vae_tiny.safetensors"], "alchemint": ["adapter_tiny.safetensors"]}


def write_spec(folder: Path, name: str = "spec.toml", **keys) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def wan_spec(folder: Path, server: str = "http://127.0.0.1:1", **more) -> Path:
    keys = {"server": server, "model": "wan", "diffusion_model": WAN_FILES["diffusion_models"][0],
            "adapter": WAN_FILES["alchemint"][0], "text_encoder": WAN_FILES["text_encoders"][0],
            "vae": WAN_FILES["vae"][0], "width": 64, "height": 48}
    return write_spec(folder, "wan.toml", **(keys | more))


def write_bench(folder: Path, with_reference: bool = True, all_references: bool = False) -> Path:
    """Two items of the demo's shapes: a subject given as a PNG transparent around it, the others drawn from their
    tags (or all given, all_references)."""
    def ref(tag: str, given: bool) -> dict:
        if not given:
            return {}
        image, mask = render_reference(np.random.default_rng(3), appearance_of(tag), 64, 64)
        name = tag.replace(" ", "_") + ".png"
        Image.fromarray(np.dstack([image, np.where(mask, 255, 0).astype(np.uint8)])).save(folder / name)
        return {"reference": name}

    items = [{"id": "a", "caption": "a red ring and a blue square", "seed": 4,
              "subjects": [{"tag": "red ring", "start": 0.0, "end": 1.0, **ref("red ring", with_reference)},
                           {"tag": "blue square", "start": 1.0, "end": 2.125, **ref("blue square", all_references)}]},
             {"id": "b", "caption": "", "seed": 9,
              "subjects": [{"tag": "yellow star", "start": 0.5, "end": 1.5, **ref("yellow star", all_references)}]}]
    path = folder / "bench.json"
    path.write_text(json.dumps({"fps": 8, "frames": 17, "items": items}))
    return path


# ------------------------------------------------------------------------------------------------- without a server

@pytest.mark.parametrize("keys,match", [
    ({"model": "sdxl"}, "model = 'sdxl' must be one of"),
    ({"model": "wan", "vae": "v.safetensors"}, "needs diffusion_model, text_encoder"),
    ({"model": "demo", "colour": "red"}, r"unknown keys \['colour'\]"),
    ({"model": "demo", "steps": "ten"}, "steps = 'ten' must be a non-negative whole number"),
    ({"model": "demo", "width": 70}, "width 70 x height 64 must be multiples of 16"),
    ({"model": "demo", "server": "localhost:8188"}, "must be a URL"),
    ({"model": "demo", "timeout": 0}, "timeout must be a positive"),
])
def test_a_bad_spec_file_is_one_line_naming_the_key(tmp_path, keys, match):
    with pytest.raises(DatasetError, match=match) as err:
        load_spec(write_spec(tmp_path, **keys))
    assert str(tmp_path / "spec.toml") in str(err.value) and "\n" not in str(err.value)


def test_a_missing_or_broken_spec_file_says_how_to_write_one(tmp_path):
    with pytest.raises(DatasetError, match="no such file; write one as docs/scoring.md shows"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("model = [")
    with pytest.raises(DatasetError, match="not a readable TOML file"):
        load_spec(tmp_path / "bad.toml")


def test_the_wan_graph_is_the_packs_graph_on_comfyuis_vae_and_text_encoder(tmp_path):
    spec = load_spec(wan_spec(tmp_path))
    subjects = [GraphSubject("red ring", 0.0, 1.0, "alchemint_benchmark/a.png"),
                GraphSubject("blue square", 1.0, 2.125, "alchemint_benchmark/b.png")]
    g = item_graph(spec, "a red ring", subjects, 17, 8.0, 7, 10, 5.66, Guidance(2.0, 5.0))
    assert g["model"]["inputs"] | {} == {"base": "wan21_tiny.safetensors", "adapter": "adapter_tiny.safetensors",
                                         "dtype": "default", "offload_blocks": False}
    assert g["clip"] == node("CLIPLoader", clip_name="umt5_tiny.safetensors", type="wan")
    assert g["ref0"]["inputs"]["vae"] == g["decode"]["inputs"]["vae"] == ["vae", 0]
    assert g["ref1"]["inputs"]["references"] == ["ref0", 0] and "references" not in g["ref0"]["inputs"]
    assert g["timeline"]["inputs"]["references"] == ["ref1", 0]
    bars = json.loads(g["timeline"]["inputs"]["timeline"])["subjects"]
    assert bars == [{"tag": "red ring", "start": 0.0, "end": 1.0}, {"tag": "blue square", "start": 1.0, "end": 2.125}]
    assert g["sample"]["inputs"] | {} == {"model": ["model", 0], "conditioning": ["condition", 0],
                                          "guider": ["guider", 0], "width": 64, "height": 48, "steps": 10,
                                          "shift": 5.66, "seed": 7}
    assert g[OUTPUT_NODE] == node("PreviewImage", images=["decode", 0])


def test_the_prompt_only_baseline_is_wan_alone_and_the_demo_has_none_through_comfyui(tmp_path):
    spec = load_spec(wan_spec(tmp_path))
    g = item_graph(spec, "a dog. dog appears between 0 and 1 seconds.", [], 17, 8.0, 3, 10, 5.66, Guidance(2.0, 5.0),
                   prompt_only=True)
    assert not any(n["class_type"].startswith("AlcheMinT") for n in g.values())
    assert g["sample"]["inputs"]["cfg"] == 5.0 and g["shifted"]["inputs"]["shift"] == 5.66
    assert g["empty"]["inputs"] == {"width": 64, "height": 48, "length": 17, "batch_size": 1}
    demo = write_spec(tmp_path, "demo.toml", model="demo")
    with pytest.raises(DatasetError, match="runs Wan alone; for the demo model add --model demo"):
        parse_models([f"d=comfyui:{demo}"], prompt_only=True)
    with pytest.raises(DatasetError, match="runs Wan alone; for the demo model use --model demo --prompt-only"):
        item_graph(load_spec(demo), "x", [], 17, 8.0, 3, 10, 3.0, Guidance(), prompt_only=True)


def test_models_parse_and_their_checks_run_before_any_video(tmp_path):
    bench = load_benchmark(write_bench(tmp_path, with_reference=False))
    spec = wan_spec(tmp_path, max_refs=1)
    choices = parse_models([f"comfyui:{spec}", "demo"], prompt_only=True)
    assert [c.name for c in choices] == ["wan", "wan-prompt-only", "demo", "demo-prompt-only"]
    assert choices[0].comfyui.diffusion_model == "wan21_tiny.safetensors" and choices[0].path is None
    with pytest.raises(DatasetError, match="2 subjects, but model wan takes at most 1; .* set max_refs in"):
        check_models(bench, choices)
    choices = parse_models([f"comfyui:{wan_spec(tmp_path)}"], prompt_only=False)
    with pytest.raises(DatasetError, match="subject 'red ring' has no reference image, which model wan \\(Wan\\)"):
        check_models(bench, choices)


def test_an_unreachable_server_is_one_line_before_any_video(tmp_path):
    bench = load_benchmark(write_bench(tmp_path))
    choices = parse_models([f"comfyui:{wan_spec(tmp_path)}"], prompt_only=False)
    with pytest.raises(DatasetError, match=r"ComfyUI at http://127.0.0.1:1: cannot be reached .* start ComfyUI"):
        check_comfyui(bench, choices, Sampling(4, 3.0, Guidance()))


# ------------------------------------------------------------------------------------------------ a real ComfyUI

@pytest.fixture(scope="module")
def server():
    from comfyui_harness import ComfyServer, comfyui_dir
    comfyui_dir()  # skips without COMFYUI_DIR
    with ComfyServer(model_files=WAN_FILES) as s:
        yield s


@pytest.mark.comfyui
def test_the_demo_through_comfyui_makes_the_in_process_videos_and_scores(server, tmp_path, capsys):
    """The same benchmark generated by the in-process demo and by the pack's nodes in a real ComfyUI (references
    uploaded as PNGs, drawn ones for subjects without an image) gives the same frames, up to ComfyUI's image saving
    (it truncates to 8 bits where we round), and the same scores."""
    bench = write_bench(tmp_path)
    spec = write_spec(tmp_path, "demo.toml", server=server.url, model="demo")
    out = tmp_path / "out"
    rc = cli.main(["benchmark", "--benchmark", str(bench), "--model", f"viacomfy=comfyui:{spec}", "--model", "demo",
                   "--steps", "4", "--backend", "demo", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert rc == 0 and "viacomfy: 2 videos generated" in printed, err
    for item in ("a", "b"):
        theirs, ours = (read_video(out / name / item)[0].astype(int) for name in ("viacomfy", "demo"))
        assert theirs.shape == ours.shape == (17, 64, 64, 3)
        assert np.abs(theirs - ours).max() <= 1 and 0 <= (ours - theirs).mean() <= 1
    results = json.loads((out / "results.json").read_text())["results"]
    pick = lambda name: [(r["item"], r["tag"], r["t_iou"], r["t_l2"]) for r in results[name]["subjects"]]  # noqa
    assert pick("viacomfy") == pick("demo") and len(pick("demo")) == 3
    recorded = json.loads((out / "viacomfy" / "benchmark.json").read_text())["generated_with"]
    assert recorded["comfyui"]["model"] == "demo" and recorded["steps"] == 4
    rc = cli.main(["benchmark", "--benchmark", str(bench), "--model", f"viacomfy=comfyui:{spec}", "--steps", "4",
                   "--backend", "demo", "--out", str(out)])
    assert rc == 0 and "viacomfy: 0 videos generated, 2 already in" in capsys.readouterr().out


@pytest.mark.comfyui
def test_the_wan_graphs_pass_the_servers_node_and_file_lists(server, tmp_path):
    info = server.object_info()
    spec = load_spec(wan_spec(tmp_path, server=server.url))
    subjects = [GraphSubject("red ring", 0.0, 1.0, "alchemint_benchmark/x.png")]
    for prompt_only in (False, True):
        g = item_graph(spec, "a red ring", [] if prompt_only else subjects, 17, 8.0, 1, 10, 5.66, Guidance(),
                       prompt_only)
        assert graph_problems(g, info) == []
    wrong = load_spec(wan_spec(tmp_path, server=server.url, vae="wan_2.1_vae.safetensors"))
    problems = graph_problems(item_graph(wrong, "x", subjects, 17, 8.0, 1, 10, 5.66, Guidance()), info)
    assert problems == ["VAELoader: vae_name 'wan_2.1_vae.safetensors' is not among the server's choices "
                        "(wan_vae_tiny.safetensors, pixel_space)"]
    g = item_graph(spec, "x", subjects, 17, 8.0, 1, 10, 5.66, Guidance())
    g["sample"]["class_type"] = "AlcheMinTSamplerV9"
    assert graph_problems(g, info) == ["node AlcheMinTSamplerV9 is unknown to the server (the AlcheMinT pack is not "
                                       "installed there)"]


@pytest.mark.comfyui
def test_a_wan_model_the_server_cannot_run_fails_before_any_video(server, tmp_path, capsys):
    bench = write_bench(tmp_path, all_references=True)
    spec = wan_spec(tmp_path, server=server.url, diffusion_model="wan2.1_t2v_14B.safetensors")
    out = tmp_path / "out"
    rc = cli.main(["benchmark", "--benchmark", str(bench), "--model", f"comfyui:{spec}", "--steps", "4",
                   "--backend", "demo", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "AlcheMinTModelLoader: base 'wan2.1_t2v_14B.safetensors' is not among the server's" in err
    assert not (out / "wan").exists()


@pytest.mark.comfyui
def test_a_refused_prompt_is_one_line_with_the_servers_reason(server):
    client = ComfyUIClient(server.url, "--model x")
    with pytest.raises(DatasetError, match="refused the prompt: .*"):
        client.run({"1": node("AlcheMinTNoSuchNode")}, timeout=30)
