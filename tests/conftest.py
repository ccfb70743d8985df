import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# CI never depends on luck: with HYPOTHESIS_PROFILE=ci (.ci/run sets it) every property test runs the same derandomized
# examples each time; local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The real-ComfyUI tests (marker `comfyui`) skip without COMFYUI_DIR. .ci/run runs them as a suite of their own:
# "separate" leaves them out of the README's run (deselected: they run next), "required" fails any that skips.
COMFYUI_SUITE = os.environ.get("ALCHEMINT_COMFYUI_SUITE", "")
COMFYUI_ENV = ("COMFYUI_DIR", "COMFYUI_PYTHON", "COMFYUI_FRONTEND_NEW")
# The optional installs (requirements-curate.txt: transformers; requirements-ray.txt: ray) are tested where they are
# installed; a user's plain install skips those tests. CI sets ALCHEMINT_REQUIRE_OPTIONAL=1: a skip for a missing
# import then fails, so CI cannot pass by not testing them.
REQUIRE_OPTIONAL = os.environ.get("ALCHEMINT_REQUIRE_OPTIONAL") == "1"


def pytest_configure(config):
    if COMFYUI_SUITE not in ("", "separate", "required"):
        raise pytest.UsageError(f"ALCHEMINT_COMFYUI_SUITE={COMFYUI_SUITE!r}: use 'separate', 'required' or unset it")
    missing = [name for name in COMFYUI_ENV if COMFYUI_SUITE == "required" and not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(f"ALCHEMINT_COMFYUI_SUITE=required but {', '.join(missing)} not set: "
                                "eval \"$(bash .ci/comfyui_env.sh PATH/TO/ComfyUI)\" first")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A test module skipped at import for a missing optional package fails under ALCHEMINT_REQUIRE_OPTIONAL too."""
    outcome = yield
    report = outcome.get_result()
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if REQUIRE_OPTIONAL and report.skipped and "could not import" in reason:
        report.outcome = "failed"
        report.longrepr = (f"skipped with ALCHEMINT_REQUIRE_OPTIONAL=1 ({reason}): pip install -r "
                           "requirements-curate.txt -r requirements-ray.txt")


def pytest_collection_modifyitems(config, items):
    if COMFYUI_SUITE == "separate":
        later = [item for item in items if item.get_closest_marker("comfyui")]
        items[:] = [item for item in items if not item.get_closest_marker("comfyui")]
        config.hook.pytest_deselected(items=later)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if COMFYUI_SUITE == "required" and item.get_closest_marker("comfyui"):
        report.outcome = "failed"
        report.longrepr = f"skipped in the required real-ComfyUI suite ({reason}): set up what it needs"
    elif REQUIRE_OPTIONAL and "could not import" in reason:
        report.outcome = "failed"
        report.longrepr = (f"skipped with ALCHEMINT_REQUIRE_OPTIONAL=1 ({reason}): pip install -r "
                           "requirements-curate.txt -r requirements-ray.txt")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(ROOT))

import alchemint_core as ac  # noqa: E402

THREADS = min(2, os.cpu_count() or 1)
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def same_threads_in_every_test():
    """A command run in-process (`--threads 1`) must not change the thread count of later tests: the bit-exact
    comparisons against subprocesses need the same reduction order on both sides."""
    yield
    torch.set_num_threads(THREADS)

TINY = ac.WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64, freq_dim=32)


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (modulations, norms and zero-initialised parts included), so tests exercise
    every term of the function rather than an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            if "norm" in name:
                p.copy_(1 + noise)
            else:
                p.copy_(noise * (4 if p.ndim == 1 or "modulation" in name or "embedding" in name else 1))
    return model


def tiny_model(seed=0, adapter=None, cfg=TINY):
    return randomize(ac.WanModel(cfg, adapter), seed).eval()


def manifest(name):
    return json.loads((DATA / name).read_text())


@pytest.fixture
def tiny():
    return tiny_model()
