"""`curate` and `cache` with --ray on a local Ray instance: the same files, byte for byte, as one process; a rerun
skips what is done; bad options and addresses give one line."""
import json
import socket
import sys
import time

import pytest
import torch

from alchemint_core import cli
from alchemint_core.demo.curation_check import curation_inputs
from alchemint_core.demo.data import write_demo_dataset
from alchemint_core.demo.pipeline import ENCODERS_FILE



@pytest.fixture(scope="module")
def cluster():
    """One local instance for the module: 2 CPUs and 1 logical GPU (Ray schedules it; torch sees no CUDA). Ray is
    imported here, not at collection, so a run that deselects these tests (the real-ComfyUI suite) never skips."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    write_demo_dataset(root / "truth", 3, seed=5, frames=9)
    curation_inputs(root / "truth", root / "videos", root / "captions.json")
    # two videos that fail, the first in the second actor's part (every 2nd video from the 2nd): the merged report
    # lists them as one process does, not part after part
    (root / "videos" / "x_broken.mp4").write_bytes(b"not a video")
    (root / "videos" / "y_uncaptioned").mkdir()
    captions = json.loads((root / "captions.json").read_text())
    (root / "captions.json").write_text(json.dumps({**captions, "x_broken.mp4": "a red ring"}))
    return root


def content(path):
    """A file's bytes; for a safetensors file its header as parsed JSON and its tensor bytes. The library writes
    the header's metadata in hash-map order, which changes from process to process (two one-process builds differ
    there too), so its bytes cannot match across processes; everything in it does."""
    data = path.read_bytes()
    if path.suffix != ".safetensors":
        return data
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def tree(folder):
    """Every file under folder: relative path -> content."""
    return {p.relative_to(folder).as_posix(): content(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv):
    """The command's exit code, printed lines and stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def test_curate_on_ray_writes_what_one_process_writes_and_resumes(cluster, demo, tmp_path, capsys):
    args = ["curate", "--videos", demo / "videos", "--captions", demo / "captions.json", "--backend", "demo"]
    code, summary, _ = run(capsys, *args, "--out", tmp_path / "one")
    assert code == 0 and summary[0] == "3 samples written, 0 already there, 2 videos failed"
    assert [line.split(":")[1] for line in summary[1:]] == [" x_broken.mp4", " y_uncaptioned"]
    code, lines, err = run(capsys, *args, "--out", tmp_path / "ray", "--ray", "auto")
    assert code == 0 and lines == ["2 Ray actors: " + summary[0], *summary[1:]], err
    assert "5/5 [" in err  # the progress bar over every part's videos
    one = tree(tmp_path / "one")
    assert len(one) > 3 * 9 and tree(tmp_path / "ray") == one  # frames, masks and sample.json of each sample
    # a rerun skips every finished sample; one a killed run left without its sample.json is done again
    (tmp_path / "ray" / "s000001" / "sample.json").unlink()
    code, lines, _ = run(capsys, *args, "--out", tmp_path / "ray", "--ray", "auto")
    assert lines[0] == "2 Ray actors: 1 samples written, 2 already there, 2 videos failed"
    assert tree(tmp_path / "ray") == one


def test_cache_on_ray_writes_what_one_process_writes_and_resumes(cluster, demo, tmp_path, capsys):
    args = ["cache", "--data", demo / "truth", "--encoders", ENCODERS_FILE, "--frames", 5, "--ref-variants", 2]
    # on one thread, as each actor runs (Ray sets OMP_NUM_THREADS to its 1 CPU): a CPU float sum split over more
    # threads rounds differently (about 1e-6 here); splitting the job over parts and actors must change nothing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(capsys, *args, "--out", tmp_path / "one")[0] == 0
    finally:
        torch.set_num_threads(threads)
    # half a GPU each: the cluster's one GPU holds two actors
    code, (line,), _ = run(capsys, *args, "--out", tmp_path / "ray", "--ray", "auto", "--ray-gpus-per-actor", 0.5)
    assert code == 0 and line == f"3 clips in {tmp_path / 'ray'}: encoded 3, 0 already there (2 Ray actors)"
    one = tree(tmp_path / "one")
    assert {"manifest.json", "null_caption.safetensors", "shards/s000002.0.safetensors"} <= set(one)
    assert tree(tmp_path / "ray") == one  # the manifest holds no timings: equal bytes
    code, (line,), _ = run(capsys, *args, "--out", tmp_path / "ray", "--ray", "auto")
    assert line == f"3 clips in {tmp_path / 'ray'}: encoded 0, 3 already there (2 Ray actors)"
    assert tree(tmp_path / "ray") == one


def test_bad_ray_options_give_one_line(cluster, demo, tmp_path, capsys, monkeypatch):
    args = ["curate", "--videos", demo / "videos", "--captions", demo / "captions.json", "--backend", "demo",
            "--out", tmp_path / "out"]

    def error(*more):
        code, _, err = run(capsys, *args, *more)
        lines = [line for line in err.split("\n") if line.strip() and "\r" not in line]  # not the progress bar's
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    assert "choose one" in error("--ray", "auto", "--workers", "2")
    assert "ask for fewer" in error("--ray", "auto", "--ray-actors", "3")  # 3 CPUs asked of 2
    assert "has 1 GPUs" in error("--ray", "auto", "--ray-gpus-per-actor", "2")
    assert "write auto, HOST:PORT" in error("--ray", "head:port")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert f"nothing answers at 127.0.0.1:{port}" in error("--ray", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    # a bad captions file is refused here, before any actor starts
    (tmp_path / "bad.json").write_text("[1]")
    assert "expected a JSON object" in error("--ray", "auto", "--captions", tmp_path / "bad.json")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    assert "pip install -r requirements-ray.txt" in error("--ray", "auto")
    assert not (tmp_path / "out").exists()
