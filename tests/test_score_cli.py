"""`score` and `benchmark` (issue 33): the benchmark file, the runner's videos scored through the one scoring
implementation (equal per subject to what the demo's `evaluate` reports), the prompt-only baseline, CLIP columns
through a tiny CLIP, a full model file, and every bad input refused in one line before any video is made."""
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alchemint_core import cli
from alchemint_core.data.dataset import read_video
from alchemint_core.demo.evaluate import Tally, heldout_prompts, load_detector
from alchemint_core.demo.pipeline import DEFAULT_GUIDANCE, DEFAULT_SHIFT, SIZE, DemoPipeline, appearance_of
from alchemint_core.synthetic import render_reference

STEPS = "2"


def write_bench(folder: Path, items: list[dict], name: str = "bench.json", **top) -> Path:
    path = folder / name
    path.write_text(json.dumps({"fps": 8, "frames": 17, "items": items, **top}))
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Held-out prompts of the demo's evaluate as a benchmark (evaluate's captions and seeds), generated once by
    `benchmark` with the demo model and its prompt-only baseline."""
    root = tmp_path_factory.mktemp("bench")
    prompts = heldout_prompts(2, seed=5)  # one prompt, two subjects
    items = [{"id": f"p{i}", "caption": " and ".join(f"a {s.tag}" for s in p.subjects), "seed": p.seed,
              "subjects": [{"tag": s.tag, "start": s.start, "end": s.end} for s in p.subjects]}
             for i, p in enumerate(prompts)]
    bench = write_bench(root, items)
    argv = ["benchmark", "--benchmark", bench, "--model", "demo", "--prompt-only", "--steps", STEPS, "--backend",
            "demo", "--out", root / "out"]
    rc = cli.main([str(a) for a in argv])
    assert rc == 0
    return {"root": root, "bench": bench, "prompts": prompts, "argv": argv, "out": root / "out",
            "results": json.loads((root / "out" / "results.json").read_text())}


def test_benchmark_generates_with_each_model_and_its_prompt_only_baseline_then_one_table(generated, capsys):
    out, results = generated["out"], generated["results"]["results"]
    assert list(results) == ["demo", "demo-prompt-only"]
    for name in results:
        assert [(r["item"], r["tag"]) for r in results[name]["subjects"]] == [
            (f"p{i}", s.tag) for i, p in enumerate(generated["prompts"]) for s in p.subjects]
        for i in range(len(generated["prompts"])):
            frames, _ = read_video(out / name / f"p{i}")
            assert frames.shape == (17, SIZE, SIZE, 3)
    assert not np.array_equal(read_video(out / "demo" / "p0")[0], read_video(out / "demo-prompt-only" / "p0")[0])
    summary = results["demo"]["summary"]
    assert summary["t_iou"][0] == pytest.approx(np.mean([r["t_iou"] for r in results["demo"]["subjects"]]))
    assert summary["clip_t"] == [None, None, None]  # no --clip: not measured

    # a rerun keeps every video and reports the same rows, in one table with a row per model
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rc, stdout, _ = run(capsys, *generated["argv"])
    assert rc == 0 and "demo: 0 videos generated" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    assert json.loads((out / "results.json").read_text())["results"] == generated["results"]["results"]
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[2].startswith("| demo |") and table[3].startswith("| demo-prompt-only |")

    # other sampling settings would mix videos: refused before anything is generated
    argv = list(generated["argv"])
    argv[argv.index("--steps") + 1] = "3"
    rc, stdout, err = run(capsys, *argv)
    assert rc == 2 and "generated with other settings" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps


def test_prompt_only_is_the_same_model_without_references_or_intervals_and_the_timing_in_the_caption(generated):
    """What reached the model for the baseline's first video, observed by a subclass that calls the real method:
    the video it makes is the one the runner wrote."""
    from alchemint_core.scoring.benchmark import load_benchmark
    from alchemint_core.scoring.runner import ModelChoice, Sampling, generate_item

    class Recording(DemoPipeline):
        calls = []

        def generate(self, subjects, prompt=None, *args, **kwargs):
            self.calls.append(([s.tag for s in subjects], prompt))
            return super().generate(subjects, prompt, *args, **kwargs)

    bench = load_benchmark(generated["bench"])
    item = bench.items[0]
    frames = generate_item(Recording(), bench, item, ModelChoice("demo-prompt-only", None, True),
                           Sampling(int(STEPS), DEFAULT_SHIFT, DEFAULT_GUIDANCE))
    a, b = item.subjects
    assert Recording.calls == [([], f"a {a.tag} and a {b.tag}. {a.tag} appears between {a.start:g} and {a.end:g} "
                                    f"seconds. {b.tag} appears between {b.start:g} and {b.end:g} seconds.")]
    assert np.array_equal(frames, read_video(generated["out"] / "demo-prompt-only" / item.id)[0])


def test_score_on_demo_videos_equals_what_evaluate_reports_per_subject(generated, capsys, tmp_path):
    """`score --backend demo` on the runner's videos against the demo evaluate's scoring (Tally) of the same frames:
    the same predicted interval, t-IOU and t-L2 for every subject."""
    result = tmp_path / "scores.json"
    rc, stdout, _ = run(capsys, "score", "--benchmark", generated["out"] / "demo" / "benchmark.json", "--backend",
                        "demo", "--name", "demo", "--out", result)
    assert rc == 0 and "| demo |" in stdout
    data = json.loads(result.read_text())
    rows = data["results"]["demo"]["subjects"]
    assert rows == generated["results"]["results"]["demo"]["subjects"]  # `benchmark` scored the same way
    assert data["options"]["backend"] == "demo"
    tally, detector = Tally(), load_detector()
    for i, p in enumerate(generated["prompts"]):
        tally.add(read_video(generated["out"] / "demo" / f"p{i}")[0], p.subjects, detector, item=f"p{i}")
    reported = tally.scores("evaluate")
    assert len(reported.per_subject) == len(rows) == 2
    for ours, theirs in zip(rows, reported.per_subject):
        assert (ours["item"], ours["tag"]) == (theirs["item"], theirs["tag"])
        assert ours["predicted"] == (list(theirs["predicted"]) if theirs["predicted"] else None)
        assert (ours["t_iou"], ours["t_l2"]) == (theirs["t_iou"], theirs["t_l2"])
    assert any(r["predicted"] is not None for r in rows)  # the comparison is not between empty tracks
    assert reported.t_iou[0] == pytest.approx(np.mean([r["t_iou"] for r in rows]))


def save_reference(path: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """A demo reference as a transparent PNG: the subject on its alpha mask."""
    image, mask = render_reference(np.random.default_rng(0), appearance_of(tag), SIZE, SIZE)
    Image.fromarray(np.dstack([image, mask.astype(np.uint8) * 255])).save(path)
    return image, mask


def test_clip_columns_through_a_tiny_clip_with_the_reference_cut_out_by_its_alpha(generated, capsys, tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import save_clip

    from alchemint_core.data.curate.backends.demo import DemoBackend
    from alchemint_core.scoring.identity import ClipEmbedder, masked_crop, subject_crops
    from alchemint_core.scoring.subjects import presence
    save_clip(tmp_path / "clip")
    p = generated["prompts"][0]
    first, second = p.subjects
    image, mask = save_reference(tmp_path / "ref.png", first.tag)
    video = generated["out"] / "demo" / "p0"
    bench = write_bench(tmp_path, [{"id": "p0", "caption": "", "video": os.path.relpath(video, tmp_path), "subjects": [
        {"tag": first.tag, "start": first.start, "end": first.end, "reference": "ref.png"},
        {"tag": second.tag, "start": second.start, "end": second.end}]}])
    rc, stdout, _ = run(capsys, "score", "--benchmark", bench, "--backend", "demo", "--clip", tmp_path / "clip",
                        "--out", tmp_path / "s.json")
    assert rc == 0
    rows = json.loads((tmp_path / "s.json").read_text())["results"]["bench"]["subjects"]
    assert rows[0]["clip_i"] is not None and rows[1]["clip_i"] is None  # no reference, no CLIP-I
    assert all(-1 <= r["clip_t"] <= 1 for r in rows if r["predicted"])
    assert all(cell.strip() != "–" for cell in stdout.splitlines()[2].split("|")[4:6])  # CLIP-T and CLIP-I shown

    # CLIP-I by hand: the subject's crops against the reference cut out by its alpha (not the whole image)
    embedder = ClipEmbedder.from_folder(tmp_path / "clip", device="cpu")
    frames = read_video(video)[0]
    track = DemoBackend().score_track(frames, first.tag)
    crops = embedder.images(subject_crops(frames, track, presence(track, 0.002)))
    cut, whole = (embedder.images([ref])[0] for ref in (masked_crop(image, mask), image))
    assert rows[0]["clip_i"] == pytest.approx(float((crops @ cut).mean()), abs=1e-5)
    assert rows[0]["clip_i"] != pytest.approx(float((crops @ whole).mean()), abs=1e-5)


def test_a_full_model_file_generates_through_the_pack_and_its_max_refs_is_respected(tmp_path, capsys):
    from conftest import tiny_model

    from alchemint_core import AdapterConfig, save_model
    cfg = replace(DemoPipeline().model.cfg, num_layers=1, ffn_dim=64)  # reads the demo's VAE latents and text
    save_model(tiny_model(seed=2, adapter=AdapterConfig(max_refs=1), cfg=cfg), tmp_path / "tiny.safetensors")
    subjects = [{"tag": "red star", "start": 0.5, "end": 1.5}, {"tag": "blue square", "start": 0.0, "end": 1.0}]
    two = write_bench(tmp_path, [{"id": "a", "caption": "a red star", "subjects": subjects}], "two.json")
    rc, stdout, err = run(capsys, "benchmark", "--benchmark", two, "--model", tmp_path / "tiny.safetensors",
                          "--steps", "1", "--backend", "demo", "--out", tmp_path / "out")
    assert rc == 2 and "item 'a': 2 subjects, but model tiny takes at most 1" in err
    assert not (tmp_path / "out").exists() and not stdout
    one = write_bench(tmp_path, [{"id": "a", "caption": "a red star", "subjects": subjects[:1]}], "one.json")
    rc, stdout, _ = run(capsys, "benchmark", "--benchmark", one, "--model", tmp_path / "tiny.safetensors",
                        "--steps", "1", "--backend", "demo", "--out", tmp_path / "out")
    assert rc == 0 and "| tiny |" in stdout
    assert read_video(tmp_path / "out" / "tiny" / "a")[0].shape == (17, SIZE, SIZE, 3)
    record = json.loads((tmp_path / "out" / "results.json").read_text())["options"]["generated_with"]["tiny"]
    assert record["model"] == str(tmp_path / "tiny.safetensors") and record["steps"] == 1


def good_subject(**changes) -> dict:
    return {"tag": "red star", "start": 0.5, "end": 1.5, **changes}


BAD_FILES = {  # name: (file content, the line's words)
    "malformed JSON": ('{"fps": 8, "items": [', "not valid JSON (line 1"),
    "not UTF-8": (b'{"fps": 8, "frames": 17, "items": [{"caption": "\xff"}]}', "not UTF-8 text"),
    "reversed interval": ({"subjects": [good_subject(start=1.5, end=0.5)]},
                          "item 'a': subject 'red star': interval 1.5-0.5 s is reversed or empty"),
    "interval past the clip": ({"subjects": [good_subject(end=4.0)]}, "item 'a': subject 'red star': interval 0.5-4 "
                                                                       "s ends after the clip"),
    "missing reference": ({"subjects": [good_subject(reference="nowhere.png")]},
                          "item 'a': subject 'red star': reference"),
    "unreadable reference": ({"subjects": [good_subject(reference="broken.png")]},
                             "item 'a': subject 'red star': "),
}


@pytest.mark.parametrize("command", ["score", "benchmark"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_benchmark_file_is_one_line_naming_the_item_and_nothing_is_written(case, command, tmp_path, capsys):
    content, words = BAD_FILES[case]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    path = tmp_path / "bench.json"
    if isinstance(content, dict):
        write_bench(tmp_path, [{"id": "a", "caption": "", "video": "v.mp4", **content}])
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    extra = ["--model", "demo"] if command == "benchmark" else []
    rc, stdout, err = run(capsys, command, "--benchmark", path, *extra, "--backend", "demo", "--out",
                          tmp_path / "out")
    assert rc == 2 and not stdout
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert {"missing reference": "fix the path", "unreadable reference": "not a readable image"}.get(case, "") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bench.json", "broken.png"])


def test_bad_inputs_that_need_a_model_or_a_video_are_refused_before_any_work(generated, tmp_path, capsys):
    video = str(generated["out"] / "demo" / "p0")  # 17 frames at 8 fps: 2.125 s
    cases = [  # (command and options, items, top-level changes, the line's words)
        (["benchmark", "--model", "demo"], [{"id": "many", "subjects": [good_subject()] * 5}], {},
         "item 'many': 5 subjects, but model demo takes at most 4; remove subjects"),
        (["benchmark", "--model", "demo"], [{"id": "dog", "subjects": [good_subject(tag="dog")]}], {},
         "item 'dog': subject 'dog': the demo draws its reference"),
        (["benchmark", "--model", str(tmp_path / "none.safetensors")], [{"id": "a", "subjects": [good_subject()]}],
         {}, "none.safetensors: no such file"),
        (["score", "--max-subjects", "1"], [{"id": "two", "video": video, "subjects": [good_subject()] * 2}], {},
         "item 'two': 2 subjects, but --max-subjects 1 takes at most 1"),
        (["score"], [{"id": "novideo", "subjects": [good_subject()]}], {}, "item 'novideo': no 'video'"),
        (["score"], [{"id": "gone", "video": "gone.mp4", "subjects": [good_subject()]}], {},
         "item 'gone': video " + str(tmp_path / "gone.mp4") + " does not exist"),
        (["score"], [{"id": "short", "video": video, "subjects": [good_subject(end=3.0)]}], {"frames": 33},
         "item 'short': video " + video + " lasts 2.125 s (17 frames at 8 fps) but subject 'red star' is asked for "
                                          "until 3 s"),
        (["score"], [{"id": "dog", "video": video, "subjects": [good_subject(tag="dog")]}], {},
         "item 'dog': tag 'dog': the demo backend finds"),
    ]
    for argv, items, top, words in cases:
        bench = write_bench(tmp_path, items, **top)
        rc, stdout, err = run(capsys, argv[0], "--benchmark", bench, *argv[1:], "--backend", "demo", "--out",
                              tmp_path / "out")
        assert rc == 2 and not stdout and len(err.strip().splitlines()) == 1 and words in err, (words, err)
        assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_prompt_with_more_subjects_than_the_model_takes_before_any_work(tmp_path, capsys):
    prompts = [{"subjects": [{"tag": "red ring", "start": 0, "end": 1}] * 5000, "seed": 1}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    rc, stdout, err = run(capsys, "evaluate", "--prompts", tmp_path / "p.json", "--no-ablations", "--out",
                          tmp_path / "e.json")
    assert rc == 2 and not stdout  # not even the detector's check ran
    assert len(err.strip().splitlines()) == 1
    assert "prompt 1 has 5000 subjects but model shipped takes at most 4; split the prompt" in err
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_demo_into_an_unwritable_folder_is_one_line_naming_out_before_generating(where, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    if where == "in /proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    out = tmp_path / "afile" / "demo.mp4" if where == "under a file" else Path("/proc/alchemint-test/demo.mp4")
    rc, stdout, err = run(capsys, "demo", "--out", out, "--steps", "1")
    assert rc == 2 and not stdout and len(err.strip().splitlines()) == 1
    assert f"--out {out}:" in err and "give a path in a folder you can write to" in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
