"""The README's first command: the shipped demo model renders a video and a strip image."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alchemint_core.demo.pipeline import ENCODERS_FILE, MODEL_FILE
from conftest import ROOT


def demo(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "alchemint_core", "demo", *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_shipped_weights_are_present_and_all_parts_together_well_under_50_mb():
    demo = [MODEL_FILE, ENCODERS_FILE, MODEL_FILE.parent / "shape_classifier.safetensors"]  # what `demo` runs on
    ablations = list((MODEL_FILE.parent / "ablations").glob("*.safetensors"))  # the benchmark's, with their VAE
    assert all(f.is_file() for f in demo) and len(ablations) == 6
    assert sum(f.stat().st_size for f in demo) < 20 * 2 ** 20
    assert sum(f.stat().st_size for f in ablations) < 40 * 2 ** 20


@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_demo_writes_a_video_and_a_strip_with_the_requested_subjects(tmp_path, ext):
    r = demo("--out", f"clip.{ext}", "--steps", "6", "--subject", "red ring:0.0-1.0", "--subject",
             "blue star:1.0-2.1", "--seed", "3", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    video = Image.open(tmp_path / f"clip.{ext}")
    assert video.n_frames == 17 and video.size == (256, 256)  # 64x64 frames upscaled 4x by default
    strip = np.asarray(Image.open(tmp_path / "clip.png").convert("RGB"))
    assert strip.shape[1] >= 17 * 64 and strip.std() > 10
    assert "'a red ring and a blue star': 17 frames" in r.stdout


def test_demo_mp4_and_options(tmp_path):
    r = demo("--out", "v.mp4", "--steps", "3", "--mode", "none", "--frames", "9", "--fps", "4", "--shift", "2",
             "--prompt", "a green disc", "--subject", "green disc:0.5-2.0", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "v.mp4").stat().st_size > 1000 and (tmp_path / "v.png").is_file()
    assert "9 frames" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--subject", "red ring:2.0-1.0"], "not after start"),
    (["--subject", "red ring"], "TAG:START-END"),
    (["--frames", "16"], "4k\\+1"),
    (["--steps", "0"], "steps 0"),
    (["--subject", "purple blob:0-1"], "colour"),
    (["--model", "nowhere.safetensors"], "nowhere.safetensors"),
])
def test_demo_bad_options_fail_with_the_fix_and_write_nothing(tmp_path, args, message):
    import re
    r = demo("--out", "x.gif", *args, tmp_path=tmp_path)
    assert r.returncode != 0 and re.search(message, r.stderr), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.gif").exists()


def test_rope_overrides_at_sampling_change_the_video_and_werope_without_edges_is_mid():
    from alchemint_core.demo.pipeline import DemoPipeline, Subject
    pipe = DemoPipeline()
    subjects = [Subject("red ring", 0.0, 1.0), Subject("blue star", 1.0, 2.1)]
    run = lambda **kw: pipe.generate(subjects, seed=1, steps=3, **kw).frames  # noqa: E731
    no_edges = run(mode="werope", rope_overrides={"w_edge": 0.0, "w_mid": 1.0})
    assert np.array_equal(no_edges, run(mode="mid"))
    assert not np.array_equal(run(mode="werope", rope_overrides={"w_edge": -0.25}), run(mode="werope"))
