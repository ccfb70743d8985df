"""Command-line entry points of the pack (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from .data.curate.backends.models import MODEL_FOLDERS
from .data.curate.pipeline import BACKENDS
from .files import check_writable
from .model.config import WAN21_1_3B, WAN21_14B, AdapterConfig, CheckpointError
from .model.loading import load_model
from .model.memory import OutOfMemory
from .model.transformer import WanModel
from .scoring.runner import VIDEO_FORMATS


def cmd_info(args) -> int:
    """Print the architecture of a checkpoint (or of Wan 2.2 A14B's two experts), or of a standard config built
    without weights."""
    if args.low_noise_model:
        from .model.experts import load_experts
        if not args.model:
            raise ValueError("--low-noise-model needs --model: the high-noise expert of the same Wan 2.2 A14B model")
        model = load_experts(args.model, args.low_noise_model, args.adapter, args.low_noise_adapter,
                             labels=("--model/--adapter (high-noise expert)",
                                     "--low-noise-model/--low-noise-adapter (low-noise expert)"))
    elif args.model:
        model = load_model(args.model, adapter=args.adapter)
    else:
        with torch.device("meta"):
            model = WanModel(WAN21_14B if args.config == "14b" else WAN21_1_3B, AdapterConfig())
    print(model.summary())
    return 0


STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cmd_convert(args) -> int:
    """Rewrite a full AlcheMinT model file with its weights stored in another dtype (the header is kept)."""
    from .model.loading import save_model
    src, dst = Path(args.input), Path(args.output)
    if src.resolve() == dst.resolve():
        raise ValueError("convert: write to a new file (OUTPUT must differ from INPUT)")
    model = load_model(src, dtype=STORAGE_DTYPES[args.dtype])
    save_model(model, dst)
    print(f"{src} ({src.stat().st_size / 2**20:.1f} MB) -> {dst} ({dst.stat().st_size / 2**20:.1f} MB, {args.dtype})")
    return 0


def parse_overrides(pairs: list[str], into: dict | None = None) -> dict:
    """KEY=VALUE pairs merged into `into`; a dotted key (adapter.w_edge=-0.4) sets an entry of a section."""
    out = into if into is not None else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set steps=500 or --set adapter.w_edge=-0.4")
        *sections, name = key.strip().split(".")
        target = out
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {pair!r}: {section} is not a section of the config")
        try:
            target[name] = json.loads(value)
        except json.JSONDecodeError:
            target[name] = value  # a bare string such as a path
    return out


def cmd_train(args) -> int:
    from .training.config import TrainConfig, read_config_file
    from .training.trainer import Trainer
    values = parse_overrides(args.set, read_config_file(args.config) if args.config else {})
    cfg = TrainConfig.from_dict(values)
    decoder = None
    if cfg.preview_every:  # previews decode with the demo encoders the cache was made with
        from .data.cache import read_manifest
        from .encoders import load_encoders
        encoder_id = (read_manifest(Path(cfg.cache)) or {}).get("encoder", "")
        if encoder_id.startswith("demo:") and Path(encoder_id[5:]).is_file():
            decoder = load_encoders(encoder_id[5:])[0]
    result = Trainer(cfg, resume=args.resume, decoder=decoder).run()
    print(f"trained {result.steps} steps, last loss {result.last_loss:.4f}: {result.output}")
    return 0


def cmd_export(args) -> int:
    from .training.trainer import export_checkpoint
    path, step, kind = export_checkpoint(args.run, args.out, raw=args.raw)
    print(f"step {step}, {kind} weights: {path}")
    return 0


def start_parts(args, argv: list[str]) -> tuple[list[subprocess.Popen], tuple[int, int] | None]:
    """--workers N: parts 1..N-1 of the job in child processes (one thread each), part 0 in this one.
    Returns the children and this process's part (None: the whole job)."""
    if args.part:
        return [], parse_part(args.part)
    if args.workers <= 1:
        return [], None
    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-m", "alchemint_core", *argv, "--part", f"{i}/{args.workers}"],
                                 env=env, stdout=subprocess.DEVNULL) for i in range(1, args.workers)]
    return children, (0, args.workers)


def wait_parts(command: str, children: list[subprocess.Popen]) -> None:
    failed = [i + 1 for i, c in enumerate(children) if c.wait() != 0]
    if failed:
        raise SystemExit(f"{command}: worker part(s) {failed} failed (their error is printed above); run the same "
                         f"command again to resume")


def parse_part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--part {text!r} must look like I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise SystemExit(f"--part {text!r}: I must be in 0..N-1")
    return i, n


def cmd_cache(args) -> int:
    from tqdm import tqdm

    from .data.cache import CacheConfig, build_cache
    from .encoders import load_encoders
    vae, text = load_encoders(args.encoders)
    cfg = CacheConfig(num_frames=args.frames, height=args.height, width=args.width,
                      clips_per_sample=args.clips_per_sample, ref_variants=args.ref_variants, seed=args.seed,
                      threshold=args.threshold, dtype=args.dtype, soft_subjects=args.soft_subjects)
    encoder_id = f"demo:{args.encoders}"
    if args.ray:
        from .data.ray_jobs import cache_parts_on_ray, options
        ray = options(args)  # checked before the bar starts
    bar = tqdm(desc="cache", unit="clip")

    def progress(done, total, name=""):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name)
        bar.refresh()

    if args.ray:  # the parts on Ray's actors, shards only; then the adoption pass below writes the manifest
        with bar:
            encoded, skipped, actors = cache_parts_on_ray(ray, args.data, args.out, args.encoders, cfg,
                                                          encoder_id, progress)
        report = build_cache(args.data, args.out, vae, text, cfg, encoder_id=encoder_id)
        print(f"{len(report.skipped) + len(report.encoded)} clips in {args.out}: encoded {encoded}, {skipped} "
              f"already there ({actors} Ray actors)")
        return 0
    argv = ["cache", "--data", str(args.data), "--out", str(args.out), "--encoders", str(args.encoders),
            "--frames", str(args.frames), "--clips-per-sample", str(args.clips_per_sample),
            "--ref-variants", str(args.ref_variants), "--seed", str(args.seed),
            "--threshold", repr(args.threshold), "--dtype", args.dtype, "--soft-subjects", repr(args.soft_subjects)]
    argv += ["--height", str(args.height), "--width", str(args.width)] if args.height and args.width else []
    workers, part = start_parts(args, argv)
    with bar:  # closed on an error too, so the error starts its own line
        report = build_cache(args.data, args.out, vae, text, cfg, encoder_id=encoder_id,
                             progress=progress, part=part)
        wait_parts("cache", workers)
    if workers:  # adopt every part's shards and write the manifest
        report = build_cache(args.data, args.out, vae, text, cfg, encoder_id=encoder_id)
        print(f"{len(report.skipped) + len(report.encoded)} clips in {args.out} ({args.workers} workers)")
    else:
        print(f"encoded {len(report.encoded)} clips, skipped {len(report.skipped)} already in {args.out}")
    return 0


def cmd_train_encoders(args) -> int:
    from .demo.encoder_training import train_text_encoder, train_vae
    from .encoders import load_encoders, save_encoders
    torch.set_num_threads(args.threads or torch.get_num_threads())
    vae0, text0 = load_encoders(args.init) if args.init else (None, None)
    arch = dict(latent_channels=args.vae_channels, width=args.vae_width, frame_wise=args.frame_wise,
                scale=args.vae_scale, pixel=args.pixel)
    if args.pixel:
        arch.update(latent_channels=12 * args.vae_scale ** 2, width=0, frame_wise=True)
    if vae0 is not None and {k: getattr(vae0, k) for k in arch} != arch:
        vae0 = None  # another architecture: a new VAE beside the file's text encoder
    vae = train_vae(steps=args.vae_steps, seed=args.seed, init=vae0, lr=args.vae_lr, latent_noise=args.latent_noise,
                    **arch)
    text = text0 if text0 is not None and args.text_steps == 0 else train_text_encoder(steps=args.text_steps,
                                                                                      seed=args.seed)
    print(f"saved {save_encoders(vae, text, args.out)}")
    return 0


def part_report(out, part: int) -> Path:
    return Path(out) / f".curate-report-part-{part}.json"


def cmd_curate(args) -> int:
    from dataclasses import asdict

    from tqdm import tqdm

    from .data.curate import curate
    from .data.curate.pipeline import CurateReport, list_videos
    from .files import atomic_write
    argv = ["curate", "--videos", str(args.videos), "--out", str(args.out), "--backend", args.backend]
    argv += ["--captions", str(args.captions)] if args.captions else []
    argv += ["--models", str(args.models)] if args.models else []
    if args.ray:
        from .data.ray_jobs import curate_on_ray, options
        ray = options(args)  # checked before the bar starts
    with tqdm(desc="videos", unit="video") as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        if args.ray:
            report, actors = curate_on_ray(ray, args.videos, args.out, args.captions, args.backend,
                                           args.models, progress)
        else:
            workers, part = start_parts(args, argv)
            report = curate(args.videos, args.out, args.captions, args.backend, args.models, part=part,
                            progress=progress)
            if args.part:  # a worker hands its report to the first process through the dataset folder
                atomic_write(part_report(args.out, part[0]),
                             lambda tmp: Path(tmp).write_text(json.dumps(asdict(report))))
            wait_parts("curate", workers)
            if workers:
                reports = [report] + [CurateReport(**json.loads(part_report(args.out, i).read_text()))
                                      for i in range(1, args.workers)]
                report = CurateReport.merged(reports, list_videos(Path(args.videos)))
                for i in range(1, args.workers):
                    part_report(args.out, i).unlink()
    print((f"{actors} Ray actors: " if args.ray else "") + report.summary())
    return 0


def cmd_curation_check(args) -> int:
    from tqdm import tqdm

    from .demo.curation_check import run_curation_check
    with tqdm(desc="curate", unit="video") as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        scores = run_curation_check(args.out, args.samples, args.seed, args.video_format, progress)
    pct = lambda v: f"{v:.1%}"  # noqa: E731
    print(f"{scores['samples']} videos, {scores['entities']} entities: interval t-IOU {scores['t_iou'][0]:.4f} "
          f"({scores['t_iou'][1]:.4f}-{scores['t_iou'][2]:.4f}), mask IoU {scores['mask_iou'][0]:.4f} "
          f"({scores['mask_iou'][1]:.4f}-{scores['mask_iou'][2]:.4f}); samples with an entity missed "
          f"{pct(scores['samples_with_a_missed_entity'])}, duplicated {pct(scores['samples_with_a_duplicated_entity'])}"
          f"; failed videos {len(scores['failed'])}")
    print(f"results: {Path(args.out) / f'curation_{args.video_format}.json'}")
    return 0


def cmd_make_demo_data(args) -> int:
    from tqdm import tqdm

    from .demo.data import write_demo_dataset
    argv = ["make-demo-data", "--out", str(args.out), "--samples", str(args.samples), "--seed", str(args.seed)]
    argv += ["--timing-in-caption"] if args.timing_in_caption else []
    workers, part = start_parts(args, argv)
    with tqdm(total=args.samples, desc="samples", unit="video") as bar:
        write_demo_dataset(args.out, args.samples, seed=args.seed, timing_in_caption=args.timing_in_caption,
                           progress=lambda done, total: bar.update(done - bar.n), part=part)
        wait_parts("make-demo-data", workers)
    return 0


DEMO_SUBJECTS = ["red ring:0.0-1.2", "yellow star:0.8-2.1"]


def add_demo_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--steps, --shift, --ref-scale, --text-scale with the shipped demo model's defaults (demo and evaluate)."""
    from .demo.pipeline import DEFAULT_GUIDANCE, DEFAULT_SHIFT, DEFAULT_STEPS
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"sampling steps (default {DEFAULT_STEPS})")
    parser.add_argument("--shift", type=float, default=DEFAULT_SHIFT,
                        help=f"noise schedule shift (default {DEFAULT_SHIFT})")
    parser.add_argument("--ref-scale", type=float, default=DEFAULT_GUIDANCE.ref_scale,
                        help=f"reference guidance scale (default {DEFAULT_GUIDANCE.ref_scale})")
    parser.add_argument("--text-scale", type=float, default=DEFAULT_GUIDANCE.text_scale,
                        help=f"text guidance scale (default {DEFAULT_GUIDANCE.text_scale})")


def add_eta_option(parser: argparse.ArgumentParser) -> None:
    """--eta (demo and evaluate): how much fresh noise each sampling step draws."""
    parser.add_argument("--eta", type=float, default=0.0,
                        help="fresh noise per sampling step, as a share of the ancestral (DDPM) step's: 0 = the "
                             "deterministic flow (default), 1 = ancestral")


def demo_sampling(args):
    """The Guidance of a demo command, with its steps and shift checked: before any work."""
    from .demo.pipeline import DEFAULT_SHIFT, DEFAULT_STEPS
    from .sampling.flow import check_eta, check_steps_shift
    from .sampling.guidance import Guidance
    check_steps_shift(args.steps, args.shift, (DEFAULT_STEPS, DEFAULT_SHIFT))
    try:
        check_eta(getattr(args, "eta", 0.0))
    except ValueError as err:
        raise ValueError(f"--eta: {err}") from None
    try:
        return Guidance(ref_scale=args.ref_scale, text_scale=args.text_scale)
    except ValueError as err:
        raise ValueError(f"--ref-scale/--text-scale: {err}") from None


def cmd_demo(args) -> int:
    from .demo.pipeline import DemoPipeline, check_subjects, parse_subject
    from .media import check_video_path, strip_image, write_video
    subjects = [parse_subject(s) for s in (args.subject or DEMO_SUBJECTS)]
    check_subjects(subjects, args.frames, args.fps)
    guidance = demo_sampling(args)
    out = check_video_path(args.out, args.scale)
    strip_path = Path(args.strip) if args.strip else out.with_suffix(".png")
    if strip_path.suffix.lower() != ".png" or strip_path.resolve() == out.resolve():
        raise ValueError(f"--strip {strip_path}: the strip image is a .png file beside the video")
    check_writable(out, "--out")
    check_writable(strip_path, "--strip")
    pipe = DemoPipeline(args.model, args.encoders)
    result = pipe.generate(subjects, args.prompt, args.seed, args.steps, args.shift, args.mode, args.frames, args.fps,
                           guidance, eta=args.eta)
    write_video(result.frames, out, args.fps, scale=args.scale)
    strip_image(result.frames, result.references, [s.tag for s in subjects], [(s.start, s.end) for s in subjects],
                args.fps).save(strip_path)
    print(f"'{result.prompt}': {len(result.frames)} frames in {result.seconds:.1f} s -> {out} and {strip_path}")
    return 0


def cmd_evaluate(args) -> int:
    import time

    from .demo.evaluate import (ABLATIONS, always_present, check_other_shapes, check_prompt_sizes, heldout_prompts,
                                 load_detector, load_prompts, markdown_table, score, through_vae, validate_detector,
                                 write_results)
    from .demo.pipeline import MODEL_FILE, DemoPipeline, encoders_for
    from .encoders import load_encoders
    from .native import DemoVAE
    from .sampling.flow import check_start_sigma
    torch.set_num_threads(args.threads or torch.get_num_threads())
    guidance = demo_sampling(args)  # checked, like the prompts, before the detector is validated
    try:
        check_start_sigma(args.from_truth)
    except ValueError as err:
        raise ValueError(f"--from-truth: {err}") from None
    try:
        check_other_shapes(args.other_shapes, args.from_truth)
    except ValueError as err:
        raise ValueError(f"--other-shapes needs --from-truth SIGMA below 1 too, e.g. --from-truth 0.65 "
                         f"--other-shapes ({err})") from None
    prompts = load_prompts(args.prompts) if args.prompts else heldout_prompts(args.count, args.seed, split=args.split)
    models = [tuple(m.split("=", 1)) for m in args.model] if args.model else [("shipped", str(MODEL_FILE))]
    bad = next((m for m in args.model or [] if "=" not in m), None)
    if bad is not None:
        raise ValueError(f"--model {bad!r}: write NAME=PATH, e.g. --model mine={bad}")
    if not args.model and not args.no_ablations:
        models += [(name, str(path)) for name, path in ABLATIONS.items() if path.is_file()]
    check_prompt_sizes(prompts, models, f"--prompts {args.prompts}" if args.prompts else "--count")
    check_writable(args.out, "--out")
    detector = load_detector()
    t0 = time.perf_counter()
    detector_iou = validate_detector(detector)
    print(f"detector on ground-truth videos: t-IOU {detector_iou:.3f} ({time.perf_counter() - t0:.0f} s)")
    overrides = {k: v for k, v in (("w_edge", args.w_edge), ("edge_offset", args.edge_offset)) if v is not None}
    # one ceiling per VAE in use: the shipped model's first, then any other (the ablations' may be older)
    vaes: dict = {}
    for name, path in models:
        vaes.setdefault(encoders_for(path, args.encoders), []).append(name)
    rows = [always_present(prompts)]
    for i, (enc, names) in enumerate(vaes.items()):
        label = "ground truth through the VAE (ceiling)" if i == 0 else \
            f"ground truth through the VAE of {', '.join(names)} (ceiling)"
        rows.append(through_vae(DemoVAE(load_encoders(enc)[0]), prompts, detector, label))
    print(markdown_table(rows), flush=True)
    suffix = (f" (from truth at sigma {args.from_truth:g}{', other shapes' if args.other_shapes else ''})"
              if args.from_truth < 1 else "")
    for name, path in models:
        pipe = DemoPipeline(path, args.encoders)
        rows.append(score(pipe, prompts, detector, name + suffix, steps=args.steps,
                          timing_in_prompt=name == "prompt-only", rope_overrides=overrides or None,
                          guidance=guidance, shift=args.shift, from_truth=args.from_truth,
                          other_shapes=args.other_shapes, eta=args.eta))
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
        if args.wrong_reference or (name == "shipped" and not args.no_ablations):
            rows.append(score(pipe, prompts, detector, f"{name}, wrong reference{suffix}", steps=args.steps,
                              wrong_reference=True, guidance=guidance, shift=args.shift, from_truth=args.from_truth,
                              other_shapes=args.other_shapes, eta=args.eta))
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(rows))
    settings = {"detector_t_iou": detector_iou, "prompts": len(prompts), "seed": args.seed,
                "split": None if args.prompts else args.split, "steps": args.steps, "shift": args.shift,
                "eta": args.eta, "ref_scale": guidance.ref_scale, "text_scale": guidance.text_scale,
                "from_truth": args.from_truth,
                "other_shapes": args.other_shapes,
                "subjects": sum(len(p.subjects) for p in prompts)}
    write_results(rows, args.out, settings)
    print(f"\nresults: {args.out}")
    return 0


def scorer(args):
    """The backend and (with --clip) the CLIP embedder that score a benchmark's videos, loaded once the benchmark
    has been checked."""
    from .data.curate.pipeline import make_backend
    from .scoring.identity import ClipEmbedder
    backend = make_backend(args.backend, Path(args.models) if args.models else None)
    return backend, ClipEmbedder.from_folder(args.clip) if args.clip else None


def score_with_bar(bench, backend, embedder, name: str):
    from tqdm import tqdm

    from .scoring.runner import score_benchmark
    with tqdm(total=sum(len(i.subjects) for i in bench.items), desc=f"score {name}", unit="subject") as bar:
        return score_benchmark(bench, backend, embedder, lambda done, total: bar.update(done - bar.n))


def scoring_options(args) -> dict:
    return {"backend": args.backend, "models": args.models, "clip": args.clip}


def cmd_score(args) -> int:
    from .scoring import table
    from .scoring.benchmark import load_benchmark
    from .scoring.runner import prepare_scoring, write_results
    bench = load_benchmark(args.benchmark)
    prepare_scoring(bench, args.backend, args.max_subjects)
    check_writable(args.out, "--out")
    name = args.name or bench.path.stem
    backend, embedder = scorer(args)
    rows = score_with_bar(bench, backend, embedder, name)
    print(table({name: rows}))
    write_results(args.out, {name: rows}, {"benchmark": str(bench.path), **scoring_options(args),
                                           "max_subjects": args.max_subjects})
    print(f"\nresults: {args.out}")
    return 0


def cmd_benchmark(args) -> int:
    from tqdm import tqdm

    from .scoring import table
    from .scoring.benchmark import load_benchmark
    from .scoring.runner import (Sampling, check_comfyui, check_demo_tags, check_earlier_run, check_models,
                                 generate_videos, generation_record, parse_models, write_results)
    bench = load_benchmark(args.benchmark)
    choices = parse_models(args.model, args.prompt_only)
    sampling = Sampling(args.steps, args.shift, demo_sampling(args))
    check_models(bench, choices)
    check_comfyui(bench, choices, sampling)  # each server reachable, with every node and file its graphs use
    if args.backend == "demo":
        check_demo_tags(bench)
    out = check_writable(args.out, "--out", folder=True)
    records = {c.name: generation_record(c, sampling, args.encoders, args.video_format) for c in choices}
    for c in choices:
        check_earlier_run(out, c, records[c.name])
    backend, embedder = scorer(args)  # a missing model folder fails before any video is made
    generated = {}
    for c in choices:
        with tqdm(total=len(bench.items), desc=f"generate {c.name}", unit="video") as bar:
            generated[c.name], made = generate_videos(bench, c, out, sampling, args.encoders, args.video_format,
                                                      lambda done, total: bar.update(done - bar.n))
        print(f"{c.name}: {made} videos generated, {len(bench.items) - made} already in {out / c.name}", flush=True)
    results = {name: score_with_bar(b, backend, embedder, name) for name, b in generated.items()}
    print(table(results))
    write_results(out / "results.json", results, {"benchmark": str(bench.path), **scoring_options(args),
                                                  "generated_with": records})
    print(f"\nresults: {out / 'results.json'}")
    return 0


def named_paths(items: list[str], example: str) -> list[tuple[str, str]]:
    """NAME=PATH arguments as (name, path) pairs; `example` is a well-formed one, flag included."""
    flag = example.split()[0]
    pairs = [item.partition("=") for item in items]
    bad = next((item for item, (name, sep, path) in zip(items, pairs) if not (sep and name and path)), None)
    if bad is not None:
        raise ValueError(f"{flag} {bad!r}: write NAME=PATH, e.g. {example}")
    return [(name, path) for name, _, path in pairs]


def cmd_probe(args) -> int:
    import numpy as np

    from .demo.evaluate import load_detector
    from .demo.probe import probe_table, probe_vae, require_frame_wise, single_subject_frames
    from .encoders import load_encoders
    from .files import atomic_write
    torch.set_num_threads(args.threads or torch.get_num_threads())
    named = named_paths(args.encoders, "--encoders pixel=runs/pixel.safetensors")
    vaes = [(name, load_encoders(path)[0]) for name, path in named]  # every file checked before any work
    for (name, path), (_, vae) in zip(named, vaes):
        require_frame_wise(vae, f"--encoders {name}={path}")
    rng = np.random.default_rng(args.seed)
    train, test = single_subject_frames(rng, args.frames), single_subject_frames(rng, args.frames // 4)
    detector = load_detector()
    rows = []
    for name, vae in vaes:
        rows.append(probe_vae(name, vae, train, test, steps=args.steps, prompts=args.prompts, detector=detector))
        print(probe_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(probe_table(rows))
    results = {"frames": args.frames, "steps": args.steps, "prompts": args.prompts, "seed": args.seed,
               "results": [{"name": r.name, "encoders": path, "latent": r.latent,
                            "probe": {str(k): v for k, v in r.accuracy.items()},
                            "ceiling": {"shape": r.ceiling.shape_accuracy, "colour": r.ceiling.colour_accuracy,
                                        "t_iou": r.ceiling.t_iou[0], "t_l2": r.ceiling.t_l2[0]}}
                           for r, (_, path) in zip(rows, named)]}
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))
    print(f"\nresults: {args.out}")
    return 0


def cmd_denoise_error(args) -> int:
    from .files import atomic_write
    from .model.latents import read_latent_format
    from .training.batches import CachedClips
    from .training.denoise_error import denoise_errors, error_table
    torch.set_num_threads(args.threads or torch.get_num_threads())
    named = named_paths(args.model, "--model mine=runs/mine/model.safetensors")
    check_writable(args.out, "--out")
    clips = CachedClips(args.cache)
    latent_format = read_latent_format(Path(args.cache))
    channels = clips[0]["video"].shape[0]
    models = []
    for name, path in named:  # every file checked before any work
        model = load_model(path, device="cpu", compute_dtype=torch.float32).eval()
        if model.cfg.in_dim != channels or model.alchemint is None:
            raise ValueError(f"--model {name}={path} reads {model.cfg.in_dim}-channel latents with references; "
                             f"{args.cache} holds {channels}-channel clips: build the cache with the model's encoders")
        models.append((name, model))
    results = {}
    for name, model in models:
        results[name] = denoise_errors(model, clips, latent_format, args.sigmas, args.count, seed=args.seed)
        print(error_table({name: results[name]}).splitlines()[-1], flush=True)
    print()
    print(error_table(results))
    out = {"cache": str(args.cache), "count": args.count or len(clips), "seed": args.seed,
           "models": {name: path for name, path in named},
           "results": {name: {str(s): v for s, v in res.items()} for name, res in results.items()}}
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=1)))
    print(f"\nresults: {args.out}")
    return 0


def cmd_bench(args) -> int:
    import platform

    from .bench import format_row, markdown_table, run_all, write_json
    if args.threads:
        torch.set_num_threads(args.threads)
    comfyui = args.comfyui or os.environ.get("COMFYUI_DIR")
    print("| figure | value | target | met |\n|---|---|---|---|", flush=True)
    figures = run_all(args.quick, comfyui, report=lambda f: print(format_row(f), flush=True),
                      parts=tuple(args.only) if args.only else None)
    print()
    print(markdown_table(figures))
    write_json(figures, args.out, {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                                   "threads": torch.get_num_threads(), "quick": args.quick})
    print(f"\nresults: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alchemint_core",
                                description="AlcheMinT: multi-reference video generation with timed subjects.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="render a video with the embedded demo model (CPU, seconds)",
                          description="Render a video in which each subject appears during its interval, with the "
                                      "demo model shipped in this repository, and a strip image: references above, "
                                      "frames below, requested intervals as bars.")
    demo.add_argument("--out", default="demo.mp4", help="output video: .mp4, .webp or .gif (default demo.mp4)")
    demo.add_argument("--subject", action="append", metavar="TAG:START-END",
                      help="a subject and its interval in seconds, repeatable, e.g. --subject \"red ring:0.5-2.0\" "
                           f"(default: {' and '.join(DEMO_SUBJECTS)}). Tags name a colour and a shape of the demo: "
                           "red/yellow/green/cyan/blue/magenta and disc/ring/square/triangle/star/cross")
    demo.add_argument("--prompt", help="caption (default: 'a <tag> and a <tag> ...')")
    demo.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    add_demo_sampling_options(demo)
    add_eta_option(demo)
    demo.add_argument("--mode", choices=["none", "mid", "werope", "avg"],
                      help="temporal RoPE mode of the references (default: the one the model was trained with)")
    demo.add_argument("--model", help="another AlcheMinT checkpoint (default: the shipped demo model)")
    demo.add_argument("--encoders", help="another demo-encoders file (default: the encoders.safetensors beside the "
                                          "model file, else the shipped one)")
    demo.add_argument("--frames", type=int, default=17, help="frames, 4k+1 (default 17)")
    demo.add_argument("--fps", type=float, default=8.0, help="frames per second (default 8)")
    demo.add_argument("--strip", help="strip image path (default: the video's path with .png)")
    demo.add_argument("--scale", type=int, default=4, help="upscale the 64x64 frames in the video file (default 4)")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("evaluate", help="timing benchmark: t-IOU, t-L2 and identity on held-out prompts",
                        description="Generate held-out prompts (appearances never seen in training) with the demo "
                                    "model and each ablation, detect every subject per frame and score the intervals "
                                    "(t-IOU, t-L2), identity (shape and colour) and time per video.")
    ev.add_argument("--seed", type=int, default=1234, help="seed of the held-out prompts (default 1234)")
    ev.add_argument("--count", type=int, default=100, help="subject-intervals to generate (default 100)")
    ev.add_argument("--split", choices=("test", "train"), default="test",
                    help="appearances of the generated prompts: test = held out of training (default), train = seen "
                         "in training (tells sample quality from generalisation)")
    ev.add_argument("--prompts", help="JSON list of prompts instead: [{\"subjects\": [{\"tag\": \"red star\", "
                                      "\"start\": 0.5, \"end\": 1.5}], \"seed\": 3}, ...]")
    ev.add_argument("--model", action="append", metavar="NAME=PATH",
                    help="evaluate these checkpoints instead of the shipped model and its ablations (repeatable)")
    ev.add_argument("--encoders", help="demo-encoders file for every model (default: each model's own: the "
                                        "encoders.safetensors beside its file, else the shipped one)")
    add_demo_sampling_options(ev)
    add_eta_option(ev)
    ev.add_argument("--no-ablations", action="store_true", help="only the shipped model")
    ev.add_argument("--wrong-reference", action="store_true",
                    help="also score every model with each subject given another appearance's reference image (tags "
                         "unchanged): how much identity comes from the images (always done for the shipped model "
                         "unless --no-ablations)")
    ev.add_argument("--w-edge", type=float, help="override WeRoPE's edge weight at sampling (werope models; a sweep)")
    ev.add_argument("--edge-offset", type=float, help="override WeRoPE's edge offset in latent frames at sampling")
    ev.add_argument("--from-truth", type=float, default=1.0, metavar="SIGMA",
                    help="start every video from its ground truth noised to SIGMA in (0, 1] instead of pure noise "
                         "(default 1: pure noise): a diagnostic of the noise level at which timing or identity is "
                         "decided")
    ev.add_argument("--other-shapes", action="store_true",
                    help="with --from-truth: that ground truth draws every subject in another shape of its colour, "
                         "and a column reports how often the model kept the input's shape instead of drawing the "
                         "requested one (does shape come from the conditioning or from the noisy input?)")
    ev.add_argument("--out", default="evaluation.json", help="results JSON (default evaluation.json)")
    ev.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    ev.set_defaults(func=cmd_evaluate)

    def add_scoring_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--benchmark", required=True,
                            help="benchmark JSON: fps, frames and items with caption, subjects (tag, interval, "
                                 "reference) and video (docs/scoring.md)")
        parser.add_argument("--backend", default="sam3", choices=BACKENDS,
                            help="what tracks the subjects: sam3 (default), gdino-sam2 (the paper's) or demo (the "
                                 "demo's colour detector, no weights; what `evaluate` scores with)")
        parser.add_argument("--models", help="folder of the backend's checkpoints in subfolders: "
                                             + ", ".join(f"{m.name}/ ({m.checkpoint})" for k, m in
                                                         MODEL_FOLDERS.items() if k != "tagger"))
        parser.add_argument("--clip", help="a CLIP model folder in the transformers format (e.g. "
                                           "openai/clip-vit-large-patch14) for the CLIP-T and CLIP-I columns")

    sc = sub.add_parser("score", help="S2VTime scores of generated videos: t-IOU, t-L2, CLIP-T, CLIP-I",
                        description="Track every subject of a benchmark file's videos (the paper's protocol through "
                                    "a curation backend) and score when it is there (t-IOU, t-L2 against its "
                                    "interval) and, with --clip, whether it is the right subject (CLIP-T against its "
                                    "tag, CLIP-I against its reference). Prints a table with bootstrap 95%% CIs, "
                                    "writes per-subject rows as JSON.")
    add_scoring_options(sc)
    sc.add_argument("--name", help="the table's row name (default: the benchmark file's name)")
    sc.add_argument("--max-subjects", type=int, default=64,
                    help="most subjects an item may have: what the model that made the videos takes (default 64)")
    sc.add_argument("--out", required=True, help="results JSON")
    sc.set_defaults(func=cmd_score)

    bm = sub.add_parser("benchmark", help="generate a benchmark's videos with chosen models, then score them all",
                        description="For each --model, generate every item's video (written under OUT/<model>/, "
                                    "kept on a rerun), then score all of them as `score` does and print one table "
                                    "with a row per model. --prompt-only adds the paper's baseline per model: no "
                                    "references or intervals, '<tag> appears between a and b seconds' in the "
                                    "caption.")
    add_scoring_options(bm)
    bm.add_argument("--model", action="append", required=True, metavar="demo|PATH|NAME=PATH|NAME=comfyui:SPEC",
                    help="demo (the shipped demo model), a full AlcheMinT model file (generated with the demo "
                         "VAE and text encoder, 64x64), or comfyui:SPEC.toml: Wan + adapter (or the demo) "
                         "generated by a running ComfyUI as the TOML file describes (docs/scoring.md); repeatable")
    bm.add_argument("--prompt-only", action="store_true",
                    help="also each model's prompt-only baseline (row NAME-prompt-only)")
    bm.add_argument("--encoders", help="demo-encoders file for model files (default: the encoders.safetensors beside "
                                        "the model file, else the shipped one)")
    add_demo_sampling_options(bm)
    bm.add_argument("--video-format", choices=VIDEO_FORMATS, default="png",
                    help="png frame folders (default: lossless, scores exactly what the model drew) or .mp4")
    bm.add_argument("--out", required=True, help="folder: OUT/<model>/ videos and benchmark.json, OUT/results.json")
    bm.set_defaults(func=cmd_benchmark)

    pr = sub.add_parser("probe", help="does a demo VAE's latent space keep shape through diffusion noise?",
                        description="For each VAE, a small CNN per noise level reads a single subject's shape from one "
                                    "frame's standardised code noised to sigma, beside the VAE's ceilings (the "
                                    "held-out ground truth encoded, decoded and scored). Prints a table, writes JSON.")
    pr.add_argument("--encoders", action="append", required=True, metavar="NAME=PATH",
                    help="an encoders file to probe (frame-wise or pixel VAE), repeatable")
    pr.add_argument("--frames", type=int, default=16000,
                    help="training frames per probe (default 16000; a quarter as many test frames). Fewer starve the "
                         "probe: 4000 frames and 600 steps read pixels' shape at sigma 0 in only 84%%")
    pr.add_argument("--steps", type=int, default=1500, help="probe training steps per noise level (default 1500)")
    pr.add_argument("--prompts", type=int, default=100,
                    help="held-out subject-intervals for the ceilings (default 100)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the probe's frames (default 0)")
    pr.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    pr.add_argument("--out", default="probe.json", help="results JSON (default probe.json)")
    pr.set_defaults(func=cmd_probe)

    de = sub.add_parser("denoise-error", help="clean-estimate error per noise level on a cache's clips, side by side",
                        description="For each model, the error of its clean estimate x_t - sigma*v against the clean "
                                    "clip at fixed noise levels (same noise for every model, no dropout), over all "
                                    "latent cells and over the subjects' cells. On a cache of clips no model trained "
                                    "on (make-demo-data --seed 9) it shows what they learnt. Prints a table, writes "
                                    "JSON.")
    de.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="a model file, repeatable")
    de.add_argument("--cache", required=True, help="cache folder of the clips (built with the models' encoders)")
    de.add_argument("--sigmas", type=float, nargs="+", default=[0.95, 0.85, 0.7, 0.5],
                    help="noise levels in (0, 1] (default 0.95 0.85 0.7 0.5)")
    de.add_argument("--count", type=int, help="clips to use (default: all)")
    de.add_argument("--seed", type=int, default=0, help="seed of the clips' order and noise (default 0)")
    de.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    de.add_argument("--out", default="denoise-error.json", help="results JSON (default denoise-error.json)")
    de.set_defaults(func=cmd_denoise_error)

    bench = sub.add_parser("bench", help="speed and memory figures against their limits (a few minutes on a CPU)",
                           description="Measure, side by side in one run: the cost of references against their token "
                                       "count, batched against separate guidance passes, forward FLOP/s against a "
                                       "plain matrix multiply, checkpoint loading against a raw read, demo video and "
                                       "training speed, scaling with frames and references, and (with COMFYUI_DIR) "
                                       "ComfyUI's own Wan model. Prints a table, writes JSON.")
    bench.add_argument("--out", default="bench.json", help="results JSON (default bench.json)")
    bench.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    bench.add_argument("--comfyui", help="a ComfyUI checkout to time its Wan model against ours (default: $COMFYUI_DIR)")
    bench.add_argument("--only", action="append", choices=["references", "guidance", "limit", "compile", "loading",
                                                           "scaling", "demo", "load", "comfyui"], help="run only these parts (repeatable)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the command, not the machine")
    bench.set_defaults(func=cmd_bench)

    info = sub.add_parser("info", help="print a model's architecture",
                          description="Print the architecture of a Wan 2.1 / 2.2 checkpoint or Wan 2.2 A14B expert pair "
                                      "(with optional AlcheMinT adapters), or of a standard config when no file is "
                                      "given.")
    info.add_argument("--model", help="Wan 2.1 T2V or Wan 2.2 (TI2V 5B; A14B: the high-noise expert) diffusion-model "
                                      ".safetensors file (default: none, show --config)")
    info.add_argument("--adapter", help="AlcheMinT adapter .safetensors file to load on top of --model")
    info.add_argument("--low-noise-model", help="Wan 2.2 A14B: the low-noise expert's file (--model is then the "
                                                "high-noise expert)")
    info.add_argument("--low-noise-adapter", help="Wan 2.2 A14B: the adapter trained on the low-noise expert")
    info.add_argument("--config", choices=["1.3b", "14b"], default="1.3b",
                      help="standard Wan 2.1 config to describe when --model is not given (default 1.3b)")
    info.set_defaults(func=cmd_info)

    conv = sub.add_parser("convert", help="store a full model file's weights in another dtype (e.g. fp16, half size)",
                          description="Rewrite a full AlcheMinT model file (as the trainer exports in mode full) with "
                                      "its weights stored as fp32, fp16 or bf16. Computation on the CPU stays fp32.")
    conv.add_argument("input", help="model .safetensors file")
    conv.add_argument("output", help="new .safetensors file")
    conv.add_argument("--dtype", choices=list(STORAGE_DTYPES), default="fp16", help="storage dtype (default fp16)")
    conv.set_defaults(func=cmd_convert)

    from .training.config import options_help
    train = sub.add_parser("train", help="train an AlcheMinT adapter, LoRA or full model on a cache",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Train with flow matching on an encoded cache. Runs as one process or under "
                                       "`torchrun --nproc-per-node N -m alchemint_core train ...` (DDP; FSDP with "
                                       "fsdp = true). Options come from --config and --set.",
                           epilog="options (config keys):\n" + options_help())
    train.add_argument("--config", help="TOML, YAML or JSON file with the options below")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one option (VALUE parsed as JSON when it can be), repeatable")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest readable checkpoint in the output folder")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="write a training run's newest checkpoint as a model or adapter file",
                            description="Write the weights of a training checkpoint as the run's result file (a full "
                                        "model in mode full, an adapter otherwise), e.g. to evaluate a run that is "
                                        "still training. Read-only on the run.")
    export.add_argument("run", help="a training output folder (its newest readable checkpoint) or a checkpoint file")
    export.add_argument("--out", required=True, help="the .safetensors file to write")
    export.add_argument("--raw", action="store_true", help="the trained weights, not their EMA (the default when the run keeps one)")
    export.set_defaults(func=cmd_export)

    cache = sub.add_parser("cache", help="encode a dataset folder into a training cache",
                           description="Encode every sample folder (see the README's dataset format) once: video "
                                       "latents, caption and tag embeddings, augmented reference variants. Re-running "
                                       "skips clips already encoded.")
    cache.add_argument("--data", required=True, help="dataset root: one sub-folder with a sample.json per sample")
    cache.add_argument("--out", required=True, help="cache folder to create or complete")
    cache.add_argument("--encoders", required=True, help="demo-encoders .safetensors (VAE + text encoder)")
    cache.add_argument("--frames", type=int, default=17, help="frames per training clip, 4k+1 (default 17)")
    cache.add_argument("--height", type=int, help="resize clips to this height (divisible by 16)")
    cache.add_argument("--width", type=int, help="resize clips to this width (divisible by 16)")
    cache.add_argument("--clips-per-sample", type=int, default=1, help="clip windows drawn from each video")
    cache.add_argument("--ref-variants", type=int, default=4, help="augmented reference images per subject")
    cache.add_argument("--seed", type=int, default=0, help="seed of window choice and augmentation")
    cache.add_argument("--threshold", type=float, default=0.002,
                       help="fraction of a frame a mask must cover for the subject to count as present")
    cache.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                       help="storage dtype of cached tensors")
    cache.add_argument("--soft-subjects", type=float, default=0.0, metavar="SIGMA",
                       help="also cache each clip with its subjects blurred by SIGMA pixels (their outlines gone), "
                            "for the training option p_soft_subjects (default 0: off)")
    cache.add_argument("--workers", type=int, default=1,
                       help="encode with this many processes (one per core); the result equals a one-process build")
    cache.add_argument("--part", help=argparse.SUPPRESS)  # I/N: one worker's share, shards only
    from .data.ray_jobs import add_ray_options
    add_ray_options(cache, "the encoders")
    cache.set_defaults(func=cmd_cache)

    enc = sub.add_parser("train-encoders", help="train the demo's VAE and text encoder on synthetic videos",
                         description="Train the demo model's tiny VAE (Wan's 4x time / 8x space compression) and its "
                                     "text encoder (contrastively against reference images) on synthetic data.")
    enc.add_argument("--out", required=True, help="output .safetensors holding both encoders")
    enc.add_argument("--vae-steps", type=int, default=4000, help="VAE optimisation steps (default 4000)")
    enc.add_argument("--text-steps", type=int, default=1500, help="text-encoder optimisation steps (default 1500)")
    enc.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    enc.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    enc.add_argument("--init", help="continue from this encoders file (its text encoder is kept with --text-steps 0)")
    enc.add_argument("--vae-lr", type=float, default=2e-3, help="VAE peak learning rate (default 2e-3)")
    enc.add_argument("--latent-noise", type=float, default=0.05,
                     help="Gaussian noise on the latents in VAE training, as a fraction of their std (default 0.05); "
                          "more makes detail survive a diffusion model's sampling noise longer, at some sharpness")
    enc.add_argument("--vae-channels", type=int, default=16, help="VAE latent channels (default 16)")
    enc.add_argument("--vae-width", type=int, default=48, help="VAE convolution width (default 48)")
    enc.add_argument("--frame-wise", action="store_true",
                     help="code each pixel frame on its own, in its own quarter of the latent channels (presence "
                          "and motion inside a latent frame survive); an --init VAE of another architecture is replaced, its text "
                          "encoder kept")
    enc.add_argument("--vae-scale", type=int, default=8, choices=(2, 4, 8),
                     help="pixels per latent cell along each side (default 8, as Wan); 4 with a DiT patch of 2 "
                          "keeps the token count")
    enc.add_argument("--pixel", action="store_true",
                     help="no VAE network: each frame's pixels space-to-depth (frame-wise, 12 x scale^2 channels, "
                          "exact decode; --vae-steps and --vae-channels are not used), standardised per channel")
    enc.set_defaults(func=cmd_train_encoders)

    cur = sub.add_parser("curate", help="turn a folder of videos and captions into a training set",
                         description="The paper's data pipeline: for each video, the subjects' tags (from the "
                                     "captions file), grounding at several frames of each tag's interval, tracking "
                                     "into mask tracks and cleaning; writes one sample per video in the dataset "
                                     "format. Resumable; a video that fails is reported and the rest go on.")
    cur.add_argument("--videos", required=True, help="folder of videos (or of frame folders)")
    cur.add_argument("--out", required=True, help="dataset folder to create or complete")
    cur.add_argument("--captions", help="JSON object: video file name -> caption, or -> {caption, timed_captions, "
                                        "tags, fps}")
    cur.add_argument("--backend", default="sam3", choices=BACKENDS,
                     help="detection and tracking models: sam3 (default; SAM 3 video), gdino-sam2 (the paper's "
                          "Grounding DINO + CLIP + SAM 2 video) or demo (the demo's colour and shape detector, no "
                          "weights)")
    cur.add_argument("--models", help="folder of the backends' checkpoints in subfolders: "
                                      + ", ".join(f"{m.name}/ ({m.checkpoint})" for m in MODEL_FOLDERS.values())
                                      + "; tagger/ is used when a caption gives no tags")
    cur.add_argument("--workers", type=int, default=1, help="processes on this machine (default 1)")
    cur.add_argument("--part", help=argparse.SUPPRESS)
    from .data.ray_jobs import add_ray_options
    add_ray_options(cur, "one backend's models")
    cur.set_defaults(func=cmd_curate)

    cc = sub.add_parser("curation-check", help="score curate against the demo generator's exact masks",
                        description="Writes demo videos with their truth kept aside, hands curate the videos and "
                                    "captions only, and scores its samples: interval t-IOU, mask IoU on present "
                                    "frames, samples with an entity missed or duplicated.")
    cc.add_argument("--out", required=True, help="working folder (truth/, videos_FORMAT/, curated_FORMAT/, "
                                                 "curation_FORMAT.json)")
    cc.add_argument("--samples", type=int, default=200, help="videos (default 200)")
    cc.add_argument("--seed", type=int, default=7, help="seed of the videos (default 7)")
    cc.add_argument("--video-format", choices=("png", "mp4"), default="png",
                    help="how the videos are handed over: png frame folders (lossless, default) or H.264 .mp4")
    cc.set_defaults(func=cmd_curation_check)

    data = sub.add_parser("make-demo-data", help="write the demo's synthetic training videos as a dataset",
                          description="Write seeded synthetic videos (1-3 coloured shapes, each present only inside "
                                      "its interval, moving) with mask tracks and reference images in the dataset "
                                      "format. Held-out (colour, shape) pairs never appear. Resumable.")
    data.add_argument("--out", required=True, help="dataset folder to create or complete")
    data.add_argument("--samples", type=int, default=8000, help="number of videos (default 8000)")
    data.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    data.add_argument("--workers", type=int, default=1,
                      help="write with this many processes (one per core); the result equals a one-process run")
    data.add_argument("--part", help=argparse.SUPPRESS)  # I/N: one worker's share
    data.add_argument("--timing-in-caption", action="store_true",
                      help="write each subject's interval into the caption (the prompt-only ablation)")
    data.set_defaults(func=cmd_make_demo_data)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError, OutOfMemory) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
