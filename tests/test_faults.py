"""Faults: processes killed at random moments (training, cache builds, adapter saves) and devices running out of
memory. Kills are real SIGKILLs of real child processes; out-of-memory is raised inside the real model's forward,
where the allocator would raise it on a GPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import alchemint_core as ac
from alchemint_core.data.cache import CacheConfig, build_cache, complete_shard
from alchemint_core.demo.data import write_demo_dataset
from alchemint_core.demo.pipeline import ENCODERS_FILE, DemoPipeline, Subject
from alchemint_core.encoders import load_encoders
from alchemint_core.model.memory import OutOfMemory
from alchemint_core.training.config import TrainConfig
from alchemint_core.training.trainer import Trainer
from conftest import ROOT, TINY, tiny_model
from training_fixtures import make_cache, train_config

pytestmark = pytest.mark.timeout(300)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alchemint_core", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 120) -> bool:
    """SIGKILL proc `delay` seconds after ready() first holds. False if it ended on its own first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"never got ready: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


# ------------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("faults"))


def train(config: Path, *args: str) -> None:
    """The train command in a child process (the same threads as the killed runs, so the same arithmetic)."""
    done = subprocess.run([sys.executable, "-m", "alchemint_core", "train", "--config", str(config), *args], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def straight(cache, tmp_path_factory):
    """The reference: the same run, never interrupted."""
    tmp = tmp_path_factory.mktemp("straight")
    (tmp / "cfg.json").write_text(json.dumps(train_config(cache, tmp / "run", steps=16, checkpoint_every=1)))
    train(tmp / "cfg.json")
    return tensors(tmp / "run" / "model.safetensors")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_killed_at_a_random_moment_resumes_to_the_same_weights(cache, straight, tmp_path, seed):
    """Checkpoints every step, so kills land inside checkpoint writes as well as between them."""
    cfg = train_config(cache, tmp_path / "run", steps=16, checkpoint_every=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    # A random checkpoint, then a random moment of the next step or write: counted in steps, not seconds, so a fast
    # machine cannot finish the 16 steps before the kill.
    after, delay = int(rng.integers(1, 12)), float(rng.uniform(0.0, 0.1))
    ckpts = tmp_path / "run" / "checkpoints"
    reached = lambda: any(int(p.stem.split("-")[1]) >= after for p in ckpts.glob("ckpt-*.safetensors"))  # noqa: E731
    proc = start("train", "--config", str(tmp_path / "cfg.json"))
    killed = kill_when(proc, reached, delay)
    assert killed and not (tmp_path / "run" / "model.safetensors").exists(), "the run ended before the kill"
    train(tmp_path / "cfg.json", "--resume")
    assert_same_tensors(tensors(tmp_path / "run" / "model.safetensors"), straight)
    assert leftovers(tmp_path / "run") == []  # a write cut short leaves no temporary behind after the resume
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 17))


def test_out_of_memory_in_training_names_the_options_and_resume_finishes(cache, tmp_path):
    cfg = TrainConfig.from_dict(train_config(cache, tmp_path / "run", steps=4, checkpoint_every=2))
    trainer = Trainer(cfg, show_bar=False)
    calls = []

    def allocator_fails(module, args):
        calls.append(1)
        if len(calls) == 3:  # step 3
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    hook = trainer.model.blocks[0].register_forward_pre_hook(allocator_fails)
    with pytest.raises(OutOfMemory) as info:
        trainer.run()
    hook.remove()
    msg = str(info.value)
    assert isinstance(info.value, torch.cuda.OutOfMemoryError)  # hosts that handle the type still do
    assert "training step 3" in msg and "12.00 GiB" in msg and "\n" not in msg
    for option in ("batch_size", "grad_accum", "gradient_checkpointing", "lora", "fsdp"):
        assert option in msg, option
    result = Trainer(cfg, resume=True, show_bar=False).run()
    assert result.steps == 4
    again = Trainer(TrainConfig.from_dict(train_config(cache, tmp_path / "straight", steps=4, checkpoint_every=2)),
                    show_bar=False).run()
    assert_same_tensors(tensors(result.output), tensors(again.output))


# ------------------------------------------------------------------------------------------------- sampling

def test_out_of_memory_while_sampling_names_the_options_and_the_next_run_works():
    pipe = DemoPipeline()
    subjects = [Subject("red ring", 0.0, 1.0)]
    clean = pipe.generate(subjects, seed=3, steps=3).frames

    def allocator_fails(module, args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    hook = pipe.model.blocks[2].register_forward_pre_hook(allocator_fails)
    with pytest.raises(OutOfMemory) as info:
        pipe.generate(subjects, seed=3, steps=3)
    hook.remove()
    msg = str(info.value)
    assert isinstance(info.value, torch.cuda.OutOfMemoryError) and msg.startswith("sampling ran out of GPU memory")
    for option in ("offload_blocks", "fp8_e4m3fn", "width/height", "fewer frames", "fewer subjects", "four_pass"):
        assert option in msg, option
    assert np.array_equal(pipe.generate(subjects, seed=3, steps=3).frames, clean)


# ------------------------------------------------------------------------------------------------- cache builds

def test_cache_build_killed_midway_resumes_without_reencoding_and_never_reads_a_broken_shard(tmp_path):
    data = tmp_path / "data"
    write_demo_dataset(data, 14, seed=11)
    out = tmp_path / "cache"
    args = ["cache", "--data", str(data), "--out", str(out), "--encoders", str(ENCODERS_FILE), "--ref-variants", "2"]
    shards = out / "shards"
    for seed in range(2):  # killed twice, at random moments after some shards are in
        delay = float(np.random.default_rng(seed).uniform(0.0, 0.4))
        need = 3 + 4 * seed
        killed = kill_when(start(*args), lambda: len(list(shards.glob("*.safetensors"))) >= need, delay)
        assert killed, "the build ended before the kill"
    done = {p.name for p in shards.glob("*.safetensors") if complete_shard(p) is not None}
    assert {p.name for p in shards.glob("*.safetensors")} == done  # nothing half-written under a shard's name
    assert 7 <= len(done) < 14
    vae, text = load_encoders(ENCODERS_FILE)
    cfg = CacheConfig(ref_variants=2)
    report = build_cache(data, out, vae, text, cfg, encoder_id=f"demo:{ENCODERS_FILE}")
    encoded = {f"{n.split('#')[0]}.0.safetensors" for n in report.encoded}
    assert encoded.isdisjoint(done) and len(report.skipped) == len(done) and len(report.encoded) == 14 - len(done)
    assert leftovers(out) == []
    build_cache(data, tmp_path / "straight", vae, text, cfg, encoder_id=f"demo:{ENCODERS_FILE}")
    for p in sorted((tmp_path / "straight" / "shards").iterdir()):
        assert_same_tensors(tensors(shards / p.name), tensors(p))


# ------------------------------------------------------------------------------------------------- adapter saves

SAVER = """
import sys, torch
sys.path.insert(0, {root!r})
from conftest import TINY, tiny_model
import alchemint_core as ac
from alchemint_core.model.loading import save_adapter
model = tiny_model(adapter=ac.AdapterConfig())
for version in range(1, 10**6):
    with torch.no_grad():
        for p in model.alchemint.parameters():
            p.fill_(version)
    save_adapter(model, {path!r}, {{"version": str(version)}})
    print(version, flush=True)
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_interrupted_adapter_save_leaves_the_previous_file_whole(tmp_path, seed):
    path = tmp_path / "adapter.safetensors"
    code = SAVER.format(root=str(Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.5))
    assert kill_when(proc, path.exists, delay)
    base = tmp_path / "base.safetensors"
    ac.save_model(tiny_model(), base, with_adapter=False)
    model = ac.load_model(base, adapter=path)  # always a whole file: the last save that finished
    with safe_open(str(path), "pt") as f:
        version = float(f.metadata()["version"])
    values = torch.cat([p.flatten() for p in model.alchemint.parameters()])
    assert torch.all(values == version)
    assert len(list(tmp_path.glob(".adapter.safetensors.*.tmp"))) <= 1  # at most the one cut short
