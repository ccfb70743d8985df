"""denoise-error: the clean-estimate error per noise level on a cache's clips, the same noise for every model."""
import json

import pytest
import torch

import alchemint_core as ac
from alchemint_core import cli
from alchemint_core.model.initialisation import move_to_latents
from alchemint_core.model.latents import read_latent_format
from alchemint_core.training.batches import CachedClips
from alchemint_core.training.denoise_error import denoise_errors
from conftest import randomize
from training_fixtures import TINY_MODEL, make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("denoise"))


def tiny(seed: int) -> ac.WanModel:
    return randomize(ac.WanModel(ac.WanConfig.from_dict(TINY_MODEL), ac.AdapterConfig(max_refs=4)), seed).eval()


def test_a_model_that_estimates_zero_scores_the_mean_square_of_the_clean_clips(cache):
    """An x-predicting model with a zero head estimates x0 = 0 at every level, so its error is the clips' own mean
    square (over all cells, and over the cells the cache's masks mark), computed here from the cache directly."""
    model = move_to_latents(tiny(0), 4, [1, 2, 2], "x")
    clips, fmt = CachedClips(cache), read_latent_format(cache)
    res = denoise_errors(model, clips, fmt, [0.9, 0.5], batch_size=3)
    x0 = [fmt.normalize(clips[i]["video"].float()[None])[0].pow(2).mean(0) for i in range(len(clips))]
    marked = [(clips[i]["masks"].float().sum(0) > 0).float() for i in range(len(clips))]
    every = sum(float(e.mean()) for e in x0) / len(x0)
    subjects = sum(float((e * m).sum()) for e, m in zip(x0, marked)) / sum(float(m.sum()) for m in marked)
    for s in (0.9, 0.5):
        assert res[s]["all"] == pytest.approx(every, rel=1e-5)
        assert res[s]["subjects"] == pytest.approx(subjects, rel=1e-5)


def test_the_same_clips_and_noise_every_time_and_the_level_matters(cache):
    model = tiny(1)
    clips, fmt = CachedClips(cache), read_latent_format(cache)
    a = denoise_errors(model, clips, fmt, [0.95, 0.3], count=3)
    b = denoise_errors(model, clips, fmt, [0.95, 0.3], count=3, batch_size=2)  # batching does not change it
    for s in a:
        assert a[s]["all"] == pytest.approx(b[s]["all"], rel=1e-5)
        assert a[s]["subjects"] == pytest.approx(b[s]["subjects"], rel=1e-5)
    assert a[0.95]["all"] != pytest.approx(a[0.3]["all"], rel=1e-3)
    with pytest.raises(ValueError, match=r"noise levels \[0.0\] must be in \(0, 1\]"):
        denoise_errors(model, clips, fmt, [0.0])


def test_the_command_writes_a_table_and_json_and_names_a_model_that_does_not_fit_the_cache(cache, tmp_path, capsys):
    good = ac.save_model(tiny(2), tmp_path / "good.safetensors")
    out = tmp_path / "err.json"
    assert cli.main(["denoise-error", "--model", f"mine={good}", "--cache", str(cache), "--sigmas", "0.8",
                     "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| mine |" in table and "σ 0.8" in table
    saved = json.loads(out.read_text())
    assert set(saved["results"]["mine"]["0.8"]) == {"all", "subjects"}
    pixel = move_to_latents(tiny(3), 768, [1, 1, 1], "x")
    wrong = ac.save_model(pixel, tmp_path / "pixel.safetensors")
    assert cli.main(["denoise-error", "--model", f"px={wrong}", "--cache", str(cache), "--out",
                     str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "reads 768-channel latents" in err and "holds 4-channel clips" in err
    assert not (tmp_path / "x.json").exists()
