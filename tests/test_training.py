"""Training end to end on a real (small) dataset: cache, modes, resume after SIGKILL, torchrun DDP."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from einops import rearrange
from safetensors import safe_open

import alchemint_core as ac
from alchemint_core.data.cache import CacheConfig, build_cache
from alchemint_core.cli import build_parser
from alchemint_core.training.config import TrainConfig
from alchemint_core.training.batches import CachedClips, make_batch, sample_sigma
from alchemint_core.training.trainer import Trainer
from conftest import ROOT
from training_fixtures import TINY_MODEL, encoders, make_cache, train_config, write_dataset


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("train"))


def run(cfg: dict, resume=False) -> "ac.training.trainer.TrainResult":
    return Trainer(TrainConfig.from_dict(cfg), resume=resume, show_bar=False).run()


def tensors(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def cli(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "alchemint_core", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kw)


def test_cache_holds_every_clip_and_rerun_skips_them(tmp_path):
    data = write_dataset(tmp_path / "data", n=3)
    vae, text = encoders()
    first = build_cache(data, tmp_path / "c", vae, text, CacheConfig(num_frames=9, ref_variants=3), encoder_id="t")
    again = build_cache(data, tmp_path / "c", vae, text, CacheConfig(num_frames=9, ref_variants=3), encoder_id="t")
    assert len(first.encoded) == 3 and again.encoded == [] and len(again.skipped) == 3
    clips = CachedClips(tmp_path / "c")
    item = clips[0]
    assert item["video"].shape == (4, 3, 4, 4)  # 9 frames -> 3 latent frames, 32 px -> 4
    assert item["refs"].shape[1:] == (3, 4, 4, 4)  # 3 augmented variants per entity
    assert not torch.equal(item["refs"][0, 0], item["refs"][0, 1])
    with pytest.raises(ac.CheckpointError, match="other encoders or settings"):
        build_cache(data, tmp_path / "c", vae, text, CacheConfig(num_frames=9, ref_variants=2), encoder_id="t")



def test_cache_resume_adopts_shards_the_manifest_missed_and_redoes_damaged_ones(tmp_path):
    """A build killed between manifest writes: complete shards are kept, a truncated one is encoded again."""
    data = write_dataset(tmp_path / "data", n=3)
    vae, text = encoders()
    cfg = CacheConfig(num_frames=9, ref_variants=2)
    build_cache(data, tmp_path / "c", vae, text, cfg, encoder_id="t")
    manifest_path = tmp_path / "c" / "manifest.json"
    full = json.loads(manifest_path.read_text())
    names = sorted(full["clips"])
    stale = {**full, "clips": {names[0]: full["clips"][names[0]]}}  # as if killed before the later writes
    manifest_path.write_text(json.dumps(stale))
    damaged = tmp_path / "c" / full["clips"][names[2]]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-100])
    kept = (tmp_path / "c" / full["clips"][names[1]]["file"]).stat().st_mtime_ns
    again = build_cache(data, tmp_path / "c", vae, text, cfg, encoder_id="t")
    assert again.encoded == [names[2]] and sorted(again.skipped) == names[:2]
    assert json.loads(manifest_path.read_text())["clips"] == full["clips"]
    assert (tmp_path / "c" / full["clips"][names[1]]["file"]).stat().st_mtime_ns == kept
    assert CachedClips(tmp_path / "c")[2]["video"].shape == (4, 3, 4, 4)

def test_cache_with_two_workers_equals_a_one_process_build(tmp_path):
    """--workers 2 splits the samples over two processes; seeds follow the sample, so every shard is the same."""
    from alchemint_core.demo.data import write_demo_dataset
    data = write_demo_dataset(tmp_path / "data", samples=5, frames=9, size=32)
    enc = str(ROOT / "alchemint_core" / "demo" / "weights" / "encoders.safetensors")
    base = ["cache", "--data", str(data), "--encoders", enc, "--frames", "9", "--ref-variants", "2"]
    for out, extra in (("one", []), ("two", ["--workers", "2"])):
        r = cli([*base, "--out", str(tmp_path / out), *extra], timeout=600)
        assert r.returncode == 0, r.stderr
    one, two = (json.loads((tmp_path / o / "manifest.json").read_text())["clips"] for o in ("one", "two"))
    assert len(one) == 5 and one == two
    for entry in one.values():
        a, b = tensors(tmp_path / "one" / entry["file"]), tensors(tmp_path / "two" / entry["file"])
        assert a.keys() == b.keys()  # workers run one thread each: float sums may differ in their last bits
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=0) for k in a)


def test_demo_data_with_two_workers_equals_a_one_process_run(tmp_path):
    for out, extra in (("one", []), ("two", ["--workers", "2"])):
        r = cli(["make-demo-data", "--out", str(tmp_path / out), "--samples", "5", *extra], timeout=600)
        assert r.returncode == 0, r.stderr
    files = lambda root: sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "one") == files(tmp_path / "two") and len(files(tmp_path / "one")) > 5
    for rel in files(tmp_path / "one"):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_batches_are_seeded_by_position_and_drop_references_jointly(cache):
    clips = CachedClips(cache)
    cfg = TrainConfig.from_dict(train_config(cache, "x", p_drop_refs=1.0, p_drop_caption=1.0))
    fmt = ac.model.latents.read_latent_format(cache)
    a = make_batch(clips, [0, 1], cfg, fmt, 0.5, False)
    b = make_batch(clips, [0, 1], cfg, fmt, 0.5, False)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.sigma, b.sigma)
    assert not a.refs.latents.any() and not a.refs.tags.any()  # dropped image and tag together
    assert a.refs.intervals[a.refs.present].min() >= 0 and (a.refs.intervals[..., 1] > a.refs.intervals[..., 0]).all()
    torch.testing.assert_close(a.context[0, : clips.null_caption.shape[0]], clips.null_caption)
    c = make_batch(clips, [1], cfg, fmt, 0.5, False)  # the same sample position gives the same draw alone
    assert torch.equal(c.noise[0], a.noise[1])


def test_dropping_words_keeps_reference_images_and_the_random_stream(cache):
    clips = CachedClips(cache)
    fmt = ac.model.latents.read_latent_format(cache)
    cfg = lambda p: TrainConfig.from_dict(train_config(cache, "x", p_drop_refs=0.0, p_drop_caption=0.0,  # noqa: E731
                                                       p_drop_words=p))
    kept, dropped = (make_batch(clips, [0, 1], cfg(p), fmt, 0.5, False) for p in (0.0, 1.0))
    assert dropped.refs.latents.any() and torch.equal(dropped.refs.latents, kept.refs.latents)  # images kept
    assert kept.refs.tags.any() and not dropped.refs.tags.any()  # every tag dropped
    n = clips.null_caption.shape[0]
    torch.testing.assert_close(dropped.context[:, :n], clips.null_caption.expand(2, -1, -1))
    assert not torch.equal(kept.context[0, :n], clips.null_caption)
    assert torch.equal(dropped.noise, kept.noise) and torch.equal(dropped.sigma, kept.sigma)  # same draws before it
    with pytest.raises(ValueError, match="p_drop_words"):
        cfg(1.5).validate()


def test_timestep_samplers_follow_their_distributions():
    g = torch.Generator().manual_seed(0)
    ln = TrainConfig.from_dict({"cache": "c", "out": "o", "model": TINY_MODEL, "mode": "full"})
    s = torch.tensor([sample_sigma(g, ln) for _ in range(4000)])
    assert abs(float(s.median()) - 0.5) < 0.03 and 0 < s.min() and s.max() < 1
    ln.timestep_sampling, ln.timestep_shift = "shifted-uniform", 3.0
    s = torch.tensor([sample_sigma(g, ln) for _ in range(4000)])
    assert float(s.mean()) > 0.6  # shift > 1 favours high noise


def test_full_training_from_scratch_lowers_the_loss(cache, tmp_path):
    result = run(train_config(cache, tmp_path / "out", steps=40, checkpoint_every=20, warmup_steps=5))
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    assert (tmp_path / "out" / "loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["steps"] == 40
    model = ac.load_model(result.output)
    assert model.alchemint is not None and model.cfg.dim == TINY_MODEL["dim"]


def test_x0_loss_space_is_the_clean_estimate_error_and_trains(cache, tmp_path):
    """loss_space 'x0' scores the clean estimate x_t - sigma*v against x0 (every noise level alike) and trains
    as the velocity loss does; an unknown space is refused with the choices."""
    from alchemint_core.training.trainer import flow_matching_loss
    trainer = Trainer(TrainConfig.from_dict({**train_config(cache, tmp_path / "a", steps=40, warmup_steps=5),
                                             "loss_space": "x0"}), show_bar=False)
    batch = trainer.batch_for(0)
    with torch.no_grad():
        sigma = batch.sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - sigma) * batch.x0 + sigma * batch.noise
        v = trainer.net(x_t, batch.sigma * 1000, batch.context, refs=batch.refs, context_mask=batch.context_mask,
                        dense=batch.dense)
        expected = ((x_t - sigma * v - batch.x0).pow(2) * batch.loss_weight).mean()
        torch.testing.assert_close(flow_matching_loss(trainer.net, batch, "x0"), expected)
        velocity = flow_matching_loss(trainer.net, batch, "velocity")
        assert velocity > expected  # sigma < 1: the velocity loss weighs the same error by 1/sigma^2
    trainer.run()
    losses = [float(r.split(",")[1]) for r in (tmp_path / "a" / "metrics.csv").read_text().splitlines()[1:]]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    with pytest.raises(ValueError, match=r"loss_space 'eps' must be one of \('velocity', 'x0'\)"):
        TrainConfig.from_dict({**train_config(cache, tmp_path / "b"), "loss_space": "eps"}).validate()


def test_full_training_continues_from_an_fp16_model_file_in_fp32(cache, tmp_path):
    """A model stored in fp16 (as the shipped demo model is) continues training: its weights train in fp32."""
    first = run(train_config(cache, tmp_path / "a", steps=4))
    assert cli(["convert", str(first.output), str(tmp_path / "half.safetensors")]).returncode == 0
    cfg = TrainConfig.from_dict({**train_config(cache, tmp_path / "b", steps=6), "base": str(tmp_path / "half.safetensors"),
                                 "model": {}})
    trainer = Trainer(cfg, show_bar=False)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    trainer.run()
    losses = [float(r.split(",")[1]) for r in (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))


def test_deepening_keeps_the_function_then_trains_the_new_blocks(cache, tmp_path):
    """deepen_to grows a trained model: at step 0 it computes exactly what the base did, then every new block
    trains and the saved file loads back with the new depth."""
    base_run = run(train_config(cache, tmp_path / "base", steps=4))
    base = ac.load_model(base_run.output)
    cfg = {**train_config(cache, tmp_path / "deep", steps=4, base=str(base_run.output), deepen_to=5), "model": {}}
    trainer = Trainer(TrainConfig.from_dict(cfg), show_bar=False)
    assert len(trainer.model.blocks) == 5
    x, ctx, t = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 3, TINY_MODEL["text_dim"]), torch.tensor([500.0])
    with torch.no_grad():
        torch.testing.assert_close(trainer.model(x, t, ctx), base(x, t, ctx), atol=1e-6, rtol=1e-5)
    new_blocks = [i for i in range(5) if i not in (0, 4)]  # 2 -> 5: the trained blocks stay first and last
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.run()
    saved = tensors(result.output)
    for i in new_blocks:
        assert saved[f"blocks.{i}.ffn.2.weight"].abs().max() > 0  # zero-initialised, now trained
        assert not torch.equal(saved[f"blocks.{i}.self_attn.q.weight"], before[f"blocks.{i}.self_attn.q.weight"])
    deep = ac.load_model(result.output)
    assert deep.cfg.num_layers == 5 and len(deep.blocks) == 5


def test_finer_patches_start_from_the_trained_embedding_and_head_then_train(cache, tmp_path):
    """patch_to re-patchifies a trained model ([1, 2, 2] -> [1, 1, 1]: 4x the tokens): a latent uniform over each
    old patch embeds every new token as its old patch's token, each new cell's head output is the mean of the old
    head's outputs for the cells of its patch; then it trains and the saved file loads back with the new patches."""
    base_run = run(train_config(cache, tmp_path / "base", steps=4))
    base = ac.load_model(base_run.output)
    cfg = {**train_config(cache, tmp_path / "fine", steps=4, base=str(base_run.output), patch_to=[1, 1, 1]),
           "model": {}}
    trainer = Trainer(TrainConfig.from_dict(cfg), show_bar=False)
    fine = trainer.model
    assert tuple(base.cfg.patch_size) == (1, 2, 2) and tuple(fine.cfg.patch_size) == (1, 1, 1)
    coarse = torch.randn(1, 4, 3, 2, 2)
    x = coarse.repeat_interleave(2, 3).repeat_interleave(2, 4)  # uniform over every 2x2 patch
    tokens, e = torch.randn(1, 5, TINY_MODEL["dim"]), torch.randn(1, TINY_MODEL["dim"])
    with torch.no_grad():
        old = rearrange(base.embed_patches(x).tokens, "b (f h w) d -> b f h w d", f=3, h=2, w=2)
        new = rearrange(fine.embed_patches(x).tokens, "b (f h w) d -> b f h w d", f=3, h=4, w=4)
        old_head = rearrange(base.head(tokens, e), "b n (ph pw c) -> b n c (ph pw)", ph=2, pw=2).mean(-1)
        new_head = fine.head(tokens, e)
    torch.testing.assert_close(new, old.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_head, old_head, atol=1e-6, rtol=1e-5)
    before = fine.patch_embedding.weight.detach().clone()
    result = trainer.run()
    saved = tensors(result.output)
    assert saved["patch_embedding.weight"].shape == (TINY_MODEL["dim"], 4, 1, 1, 1)
    assert not torch.equal(saved["patch_embedding.weight"].float(), before)
    loaded = ac.load_model(result.output)
    assert tuple(loaded.cfg.patch_size) == (1, 1, 1)
    with torch.no_grad():
        out = loaded(torch.randn(1, 4, 3, 4, 4), torch.tensor([500.0]), torch.randn(1, 3, TINY_MODEL["text_dim"]))
    assert out.shape == (1, 4, 3, 4, 4) and torch.isfinite(out).all()


def test_latent_to_moves_a_trained_model_onto_pixel_latents_with_x_prediction(cache, tmp_path):
    """latent_to: a model trained on one VAE's latents continues on another's (the pixel VAE: 768 channels per
    cell) with a new patch embedding and a zero head predicting x0; every other weight is the trained one, the first
    velocity is x_t / sigma (an x0 estimate of 0, the latents' mean), then it trains and loads back."""
    from alchemint_core.encoders import TinyVideoVAE
    from alchemint_core.training.batches import CachedClips
    base_run = run(train_config(cache, tmp_path / "base", steps=4))
    base = ac.load_model(base_run.output)
    pixel = TinyVideoVAE(768, 0, frame_wise=True, scale=8, pixel=True).eval()
    pixel_cache = tmp_path / "pixel_cache"
    build_cache(cache.parent / "data", pixel_cache, pixel, encoders()[1], CacheConfig(num_frames=9, ref_variants=2),
                encoder_id="pixel")
    cfg = {**train_config(pixel_cache, tmp_path / "px", steps=8, base=str(base_run.output),
                          latent_to={"in_dim": 768, "patch_size": [1, 1, 1], "prediction": "x"}), "model": {}}
    trainer = Trainer(TrainConfig.from_dict(cfg), show_bar=False)
    moved = trainer.model
    assert moved.cfg.in_dim == moved.cfg.out_dim == 768 and moved.cfg.prediction == "x"
    kept = {k: v for k, v in base.state_dict().items() if not k.startswith(("patch_embedding.", "head.head."))}
    for k, v in kept.items():
        assert torch.equal(moved.state_dict()[k].float(), v.float()), k
    x, ctx = torch.randn(1, 768, 3, 4, 4), torch.randn(1, 3, TINY_MODEL["text_dim"])
    with torch.no_grad():
        torch.testing.assert_close(moved(x, torch.tensor([500.0]), ctx), x / 0.5)
    result = trainer.run()
    losses = [float(r.split(",")[1]) for r in (tmp_path / "px" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    loaded = ac.load_model(result.output)
    assert loaded.cfg.prediction == "x" and loaded.cfg.in_dim == 768
    assert loaded.head.head.weight.abs().max() > 0  # the zero head trained
    assert len(CachedClips(pixel_cache)) == len(CachedClips(cache))


@pytest.mark.parametrize("change,match", [({"deepen_to": 1}, "must be an integer >= the model's 2 blocks"),
                                          ({"deepen_to": 3, "mode": "adapter-only"}, "mode 'full'"),
                                          ({"deepen_to": -1}, "deepen_to must be an integer >= 0"),
                                          ({"patch_to": [1, 3, 1]}, r"patch_to \[1, 3, 1\] must be three integers"),
                                          ({"patch_to": [1, 1]}, "must be three integers >= 1 that divide"),
                                          ({"patch_to": [1, 1, 1], "mode": "adapter-only"}, "patch_to needs"),
                                          ({"patch_to": "1,1,1"}, "patch_to must be a list"),
                                          ({"latent_to": {"in_dim": 0}}, "latent_to: in_dim 0 must be an integer"),
                                          ({"latent_to": {"channels": 8}}, "latent_to must be a table of in_dim"),
                                          ({"latent_to": {"prediction": "eps"}}, "prediction 'eps' must be one of"),
                                          ({"latent_to": {"in_dim": 8}, "mode": "adapter-only"}, "latent_to needs")])
def test_bad_growth_is_explained(cache, tmp_path, change, match):
    base_run = run(train_config(cache, tmp_path / "base", steps=2))
    cfg = TrainConfig.from_dict({**train_config(cache, tmp_path / "d", base=str(base_run.output), **change),
                                 "model": {}})
    with pytest.raises(ValueError, match=match):
        Trainer(cfg.validate(), show_bar=False)


def test_lora_adapter_file_loads_back_and_changes_the_output(cache, tmp_path):
    base_run = run(train_config(cache, tmp_path / "base", steps=2))
    cfg = train_config(cache, tmp_path / "lora", base=str(base_run.output), mode="lora", steps=4,
                       adapter={"max_refs": 4, "lora_rank": 4, "lora_alpha": 4.0}, lr_new=5e-3)
    cfg.pop("model")
    result = run(cfg)
    keys = tensors(result.output)
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in keys
    assert "diffusion_model.blocks.1.ffn.2.alpha" in keys
    assert not any(k.startswith("blocks.") for k in keys)
    base = ac.load_model(base_run.output)
    tuned = ac.load_model(base_run.output, adapter=result.output)
    x, ctx = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 3, TINY_MODEL["text_dim"])
    assert (tuned(x, torch.tensor([500.0]), ctx) - base(x, torch.tensor([500.0]), ctx)).abs().max() > 1e-5


def test_adapter_only_mode_trains_only_new_parameters(cache, tmp_path):
    base_run = run(train_config(cache, tmp_path / "base", steps=2))
    cfg = train_config(cache, tmp_path / "ad", base=str(base_run.output), mode="adapter-only", steps=3)
    cfg.pop("model")
    trainer = Trainer(TrainConfig.from_dict(cfg), show_bar=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("alchemint.") for k in changed)


def test_gradient_accumulation_equals_the_larger_batch(cache, tmp_path):
    a = run(train_config(cache, tmp_path / "a", steps=3, batch_size=2, grad_accum=1))
    b = run(train_config(cache, tmp_path / "b", steps=3, batch_size=1, grad_accum=2))
    ta, tb = tensors(a.output), tensors(b.output)
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=1e-5, rtol=1e-4)


def test_ema_weights_are_what_gets_saved(cache, tmp_path):
    trainer = Trainer(TrainConfig.from_dict(train_config(cache, tmp_path / "e", steps=3, ema_decay=0.9)), show_bar=False)
    result = trainer.run()
    saved = tensors(result.output)
    name = "blocks.0.ffn.0.weight"
    torch.testing.assert_close(saved[name], trainer.ema[name])
    assert not torch.equal(saved[name], trainer.model.state_dict()[name])


def test_resume_after_sigkill_reaches_the_same_weights(cache, tmp_path):
    cfg = train_config(cache, tmp_path / "killed", steps=10, checkpoint_every=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "alchemint_core", "train", "--config", str(tmp_path / "cfg.json")],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name >= "ckpt-0000004" for p in ckpts.glob("ckpt-*.safetensors")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "run finished before it could be killed"
    resumed = cli(["train", "--config", str(tmp_path / "cfg.json"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    straight = run(train_config(cache, tmp_path / "straight", steps=10, checkpoint_every=2))
    a, b = tensors(tmp_path / "killed" / "model.safetensors"), tensors(straight.output)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [int(r.split(",")[0]) for r in (tmp_path / "killed" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))  # no step logged twice after the restart


def test_failed_checkpoint_write_leaves_the_previous_one_intact(cache, tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes the next checkpoint write fail."""
    cfg = train_config(cache, tmp_path / "full", steps=2, checkpoint_every=2)
    run(cfg)
    ckpt = next((tmp_path / "full" / "checkpoints").glob("ckpt-*.safetensors"))
    good = ckpt.read_bytes()
    limit = len(good) // 2
    code = f"""
import json, resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from alchemint_core.training.config import TrainConfig
from alchemint_core.training.trainer import Trainer
t = Trainer(TrainConfig.from_dict(json.loads({json.dumps(json.dumps({**cfg, "steps": 4}))})), resume=True, show_bar=False)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
t.run()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and ("File too large" in out.stderr or "Errno 27" in out.stderr), out.stderr[-2000:]
    assert ckpt.read_bytes() == good
    assert [p.name for p in (tmp_path / "full" / "checkpoints").iterdir()] == [ckpt.name]  # no temp file left
    resumed = Trainer(TrainConfig.from_dict({**cfg, "steps": 4}), resume=True, show_bar=False)
    assert resumed.step == 2


@pytest.mark.parametrize("sharding,port", [("ddp", 29517), ("fsdp", 29518)])
def test_two_processes_equal_one_process(cache, tmp_path, sharding, port):
    """torchrun with 2 CPU processes (gloo), DDP or FSDP, gives the weights of one process on the same global batch."""
    cfg = train_config(cache, tmp_path / "ddp", steps=4, batch_size=2, threads=1, fsdp=sharding == "fsdp",
                       ema_decay=0.5)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(port), "-m", "alchemint_core", "train", "--config", str(tmp_path / "cfg.json")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    single = run(train_config(cache, tmp_path / "one", steps=4, batch_size=2, threads=1, ema_decay=0.5))
    a, b = tensors(tmp_path / "ddp" / "model.safetensors"), tensors(single.output)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5)


def test_help_explains_every_option():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert f"\n  {name} " in help_text, name


@pytest.mark.parametrize("change,match", [({"mode": "half"}, "mode"), ({"steps": 0}, "steps"),
                                          ({"p_drop_refs": 2}, "probability"), ({"bogus": 1}, "unknown options"),
                                          ({"mode": "lora"}, "lora_rank"), ({"cache": ""}, "cache is required"),
                                          ({"precision": "fp8"}, "precision"),
                                          ({"compile": "fast"}, "not a torch.compile backend"),
                                          ({"compile": True}, "not a torch.compile backend"),
                                          ({"lr_schedule": "step"}, "lr_schedule"),
                                          ({"min_lr_ratio": 2}, "min_lr_ratio")])
def test_bad_training_configs_are_explained(cache, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({**train_config(cache, tmp_path), **change}).validate()


def test_cli_reports_config_errors_in_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text("steps = [")
    out = cli(["train", "--config", str(tmp_path / "bad.toml")])
    assert out.returncode == 2 and "could not be parsed" in out.stderr and "Traceback" not in out.stderr


def test_yaml_and_toml_configs_read_the_same(tmp_path):
    from alchemint_core.training.config import read_config_file
    (tmp_path / "c.yaml").write_text("cache: /data/c\nsteps: 5\nadapter:\n  rope_mode: avg\n")
    (tmp_path / "c.toml").write_text('cache = "/data/c"\nsteps = 5\n[adapter]\nrope_mode = "avg"\n')
    assert read_config_file(tmp_path / "c.yaml") == read_config_file(tmp_path / "c.toml")


def test_previews_show_sampled_frames_with_references_and_intervals(cache, tmp_path):
    vae, _ = encoders()
    trainer = Trainer(TrainConfig.from_dict(train_config(cache, tmp_path / "p", steps=2, preview_every=2)),
                      show_bar=False, decoder=vae)
    trainer.run()
    from PIL import Image
    img = Image.open(tmp_path / "p" / "previews" / "step_0000002.png")
    assert img.width >= 9 * 32 * 2 and img.height > 2 * 32 * 2  # 9 frames of 32 px at scale 2, references above


def test_dotted_set_overrides_one_entry_of_a_config_section():
    from alchemint_core.cli import parse_overrides
    from alchemint_core.training.config import read_config_file
    base = read_config_file(ROOT / "alchemint_core" / "demo" / "configs" / "werope.toml")
    values = parse_overrides(["adapter.w_edge=-0.25", "steps=10", "out=runs/x"], base)
    cfg = TrainConfig.from_dict(values)
    assert cfg.adapter["w_edge"] == -0.25 and cfg.adapter["rope_mode"] == "werope" and cfg.adapter["max_refs"] == 4
    assert cfg.steps == 10 and cfg.out == "runs/x"
    with pytest.raises(ValueError, match="steps is not a section"):
        parse_overrides(["steps.x=1"], {"steps": 3})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["adapter.w_edge"])


def test_bf16_autocast_trains_close_to_fp32_and_keeps_fp32_weights(cache, tmp_path):
    fp32 = run(train_config(cache, tmp_path / "fp32", steps=4, precision="fp32"))
    bf16 = run(train_config(cache, tmp_path / "bf16", steps=4, precision="bf16"))
    a, b = tensors(fp32.output), tensors(bf16.output)
    assert all(v.dtype == torch.float32 for v in b.values())
    diff = [float((a[k] - b[k]).abs().max()) for k in a]
    assert 0 < max(diff) < 0.05  # bf16 matmuls really ran, and the training stayed on the same path


def test_compiled_blocks_train_the_same_weights_and_resume_eager(cache, tmp_path):
    """compile goes through dynamo's graph capture of every block in training (the 'eager' backend skips code
    generation to keep the test fast; inductor is what the demo model trains with) and is no part of a run's
    identity: a run compiled for 4 steps resumes eager and lands where an all-eager run does."""
    import torch._dynamo
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = run(train_config(cache, tmp_path / "eager", steps=6, checkpoint_every=2))
    run(train_config(cache, tmp_path / "mixed", steps=4, checkpoint_every=2, compile="eager"))
    mixed = run(train_config(cache, tmp_path / "mixed", steps=6, checkpoint_every=2), resume=True)
    a, b = tensors(eager.output), tensors(mixed.output)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the blocks really were captured
    assert not torch._dynamo.utils.counters["graph_break"]  # whole blocks, not pieces


def test_cosine_schedule_warms_up_then_decays_to_its_floor(cache, tmp_path):
    import csv
    out = tmp_path / "cos"
    run(train_config(cache, out, steps=12, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1))
    lr = [float(r["lr_new"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert len(lr) == 12 and lr[0] == pytest.approx(5e-4) and lr[1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lr[1:], lr[2:])) and lr[-1] < lr[1]
    assert lr[6] + lr[7] == pytest.approx(1e-3 * (1 + 0.1), rel=0.01)  # a cosine: symmetric about its middle
    assert lr[-1] == pytest.approx(1e-4)
    flat = tmp_path / "flat"
    run(train_config(cache, flat, steps=6, warmup_steps=2))
    assert [float(r["lr_new"]) for r in csv.DictReader(open(flat / "metrics.csv"))][1:] == [1e-3] * 5


def test_atomic_writes_make_files_with_the_usual_permissions(tmp_path):
    from alchemint_core.files import atomic_write, save_safetensors
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x.json", lambda tmp: open(tmp, "w").write("{}"))
        weights = save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")  # safetensors re-creates it
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and weights.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("path", sorted((ROOT / "alchemint_core" / "demo" / "configs").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_every_shipped_demo_config_is_valid_and_builds_its_model(path):
    from alchemint_core.model.config import WanConfig
    from alchemint_core.training.config import read_config_file
    from alchemint_core.training.trainer import build_model
    cfg = TrainConfig.from_dict(read_config_file(path)).validate()
    assert cfg.cache.startswith("runs/") and cfg.out.startswith("runs/")
    if not cfg.base:
        model = WanConfig.from_dict(cfg.model).validate()
        assert model.in_dim == model.out_dim
        return
    built = build_model(TrainConfig.from_dict({**cfg.to_dict(), "base": str(ROOT / cfg.base), "compile": ""}),
                        torch.device("cpu"))  # a shipped file grown as the config says
    moved = cfg.latent_to
    assert (built.cfg.in_dim, list(built.cfg.patch_size), built.cfg.prediction) == \
        (moved["in_dim"], moved["patch_size"], moved["prediction"])


def test_export_writes_a_checkpoint_as_the_runs_result_file(cache, tmp_path):
    """The newest checkpoint of a run, exported from the CLI, is the file the run itself writes at that step:
    its EMA weights by default, the trained weights with --raw; an adapter file for non-full modes."""
    cfg = train_config(cache, tmp_path / "r", steps=4, checkpoint_every=2, ema_decay=0.9)
    trainer = Trainer(TrainConfig.from_dict(cfg), show_bar=False)
    result = trainer.run()
    raw = {k: v.detach().float() for k, v in trainer.model.state_dict().items()}
    out = cli(["export", str(tmp_path / "r"), "--out", str(tmp_path / "ema.safetensors")])
    assert out.returncode == 0 and "step 4, EMA" in out.stdout, out.stderr
    assert tensors(tmp_path / "ema.safetensors").keys() == tensors(result.output).keys()
    for k, v in tensors(result.output).items():
        torch.testing.assert_close(tensors(tmp_path / "ema.safetensors")[k], v)
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("ckpt-*"))[0]  # a given file: step 2, not the newest
    out = cli(["export", str(ckpt), "--raw", "--out", str(tmp_path / "raw.safetensors")])
    assert out.returncode == 0 and "step 2, raw" in out.stdout, out.stderr
    exported = ac.load_model(tmp_path / "raw.safetensors")
    assert not torch.equal(exported.state_dict()["blocks.0.ffn.0.weight"], raw["blocks.0.ffn.0.weight"])
    out = cli(["export", str(tmp_path / "r"), "--raw", "--out", str(tmp_path / "raw4.safetensors")])
    assert out.returncode == 0 and "step 4, raw" in out.stdout, out.stderr
    for k, v in ac.load_model(tmp_path / "raw4.safetensors").state_dict().items():
        torch.testing.assert_close(v.float(), raw[k])  # the trained weights at step 4
    lora = train_config(cache, tmp_path / "lora", base=str(result.output), mode="lora", steps=2, checkpoint_every=2,
                        adapter={"max_refs": 4, "lora_rank": 4, "lora_alpha": 4.0})
    lora.pop("model")
    lora_result = run(lora)
    _, step, kind = ac.training.trainer.export_checkpoint(tmp_path / "lora", tmp_path / "lora-export.safetensors")
    assert (step, kind) == (2, "raw")  # no EMA kept: the trained weights, as the run saved them
    for k, v in tensors(lora_result.output).items():
        torch.testing.assert_close(tensors(tmp_path / "lora-export.safetensors")[k], v)
    assert tensors(tmp_path / "lora-export.safetensors").keys() == tensors(lora_result.output).keys()


def test_export_explains_what_it_cannot_use(cache, tmp_path):
    empty = cli(["export", str(tmp_path), "--out", str(tmp_path / "x.safetensors")])
    assert empty.returncode == 2 and "no readable checkpoint" in empty.stderr
    run(train_config(cache, tmp_path / "noema", steps=2, checkpoint_every=2, ema_decay=0.0))
    model_file = tmp_path / "noema" / "model.safetensors"  # a model, not a checkpoint
    wrong = cli(["export", str(model_file), "--out", str(tmp_path / "x.safetensors")])
    assert wrong.returncode == 2 and "not a training checkpoint" in wrong.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_soften_subjects_blurs_only_around_the_subjects():
    """The softened frame keeps everything away from the subjects and loses the outline inside: a star's tips
    and a ring's hole are averaged away, its colour stays."""
    from alchemint_core.data.soften import soften_subjects
    from alchemint_core.synthetic import shape_mask
    frames = np.full((2, 64, 64, 3), 120, np.uint8)
    frames[:, :, 54:] = 60  # an edge far from the subject (beyond the widened mask and the blur): stays sharp
    cov = shape_mask("ring", 18, 0.0, 64, 64, 20, 20) > 0.5
    frames[:, cov] = (250, 20, 20)
    soft = soften_subjects(frames, [np.stack([cov, cov])], 4.0)
    assert soft.shape == frames.shape and soft.dtype == np.uint8
    np.testing.assert_array_equal(soft[:, :, 50:], frames[:, :, 50:])
    hole = soft[0, 20, 20].astype(int)  # the ring's hole takes the ring's colour, the ring loses contrast
    assert hole[0] > 150 and abs(int(soft[0, 20, 20, 0]) - int(soft[0, 20, 12, 0])) < 60
    np.testing.assert_array_equal(soften_subjects(frames, [np.stack([cov, cov])], 0.0), frames)
    from alchemint_core.data.dataset import DatasetError
    with pytest.raises(DatasetError, match=r"soft_subjects=-1.*sigma in pixels"):
        soften_subjects(frames, [], -1)


def test_soft_subject_training_noises_the_softened_clip_toward_the_sharp_target(tmp_path):
    """A cache built with soft_subjects holds each clip softened; with p_soft_subjects the batch noises that clip
    only at noise levels >= soft_min_sigma, and the loss's target velocity still reaches the sharp clip from x_t.
    A cache without softened clips is refused with the fix; caches made before the option stay valid."""
    from alchemint_core.training.trainer import flow_matching_loss
    data = write_dataset(tmp_path / "data", n=4)
    vae, text = encoders()
    build_cache(data, tmp_path / "plain", vae, text, CacheConfig(num_frames=9, ref_variants=2), encoder_id="t")
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert "soft_subjects" not in manifest["config"]  # as before the option: old caches resume
    build_cache(data, tmp_path / "soft", vae, text, CacheConfig(num_frames=9, ref_variants=2, soft_subjects=2.0),
                encoder_id="t")
    clips = CachedClips(tmp_path / "soft")
    item = clips[0]
    assert item["video_soft"].shape == item["video"].shape and not torch.equal(item["video_soft"], item["video"])

    cfg = TrainConfig.from_dict({**train_config(tmp_path / "soft", tmp_path / "run", steps=4, batch_size=4),
                                 "p_soft_subjects": 1.0, "soft_min_sigma": 0.5})
    trainer = Trainer(cfg, show_bar=False)
    for micro in range(4):
        batch = trainer.batch_for(micro)
        if batch.signal is not None and (batch.sigma >= 0.5).any() and (batch.sigma < 0.5).any():
            break
    assert batch.signal is not None, "no batch mixed high and low noise levels"
    for i, s in enumerate(batch.sigma.tolist()):
        softened = not torch.equal(batch.signal[i], batch.x0[i])
        assert softened == (s >= 0.5)
    with torch.no_grad():
        sigma = batch.sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - sigma) * batch.signal + sigma * batch.noise
        v = trainer.net(x_t, batch.sigma * 1000, batch.context, refs=batch.refs, context_mask=batch.context_mask)
        expected = ((x_t - sigma * v - batch.x0).pow(2) * batch.loss_weight).mean()  # clean estimate vs sharp x0
        torch.testing.assert_close(flow_matching_loss(trainer.net, batch, "x0"), expected)
    assert trainer.run().steps == 4

    with pytest.raises(ValueError, match=r"needs a cache with softened clips.*--soft-subjects"):
        Trainer(TrainConfig.from_dict({**train_config(tmp_path / "plain", tmp_path / "r2"), "p_soft_subjects": 0.5}),
                show_bar=False)
    with pytest.raises(ValueError, match=r"p_soft_subjects must be a probability"):
        TrainConfig.from_dict({**train_config(tmp_path / "soft", tmp_path / "r3"), "p_soft_subjects": 2}).validate()
