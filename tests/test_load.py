"""Load: many demo generations in one process (the bench's `load` part, at 2 steps instead of 40). Ten queued
workflows in a real ComfyUI: test_comfyui_e2e.test_ten_workflows_queued_at_once_all_complete."""
import json
import subprocess
import sys

from conftest import ROOT, THREADS

# A fresh process, as `bench --only load` runs: the growth measured is the pipeline's own, not what the heap of a
# pytest process that has run 400 other tests does (it grew 25 MB there once while a fresh process stays flat).
MEASURE = """
import dataclasses, json, torch
torch.set_num_threads({threads})
from alchemint_core.bench import repeated_generations
print(json.dumps([{{**dataclasses.asdict(f), "met": f.met}} for f in repeated_generations(50, steps=2)]))
"""


def test_fifty_demo_videos_keep_memory_flat_and_repeat_exactly():
    run = subprocess.run([sys.executable, "-c", MEASURE.format(threads=THREADS)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    growth, same = json.loads(run.stdout.splitlines()[-1])
    print(f"\n{growth['name']}: {growth['value']:.1f} MB ({growth['detail']})")
    assert same["detail"]["repeats"] == 45 and same["value"] == 1.0  # every repeat of a seed gave the same frames
    assert growth["met"], growth  # resident memory, not time (figures in docs/results/bench.json at 40 steps)
