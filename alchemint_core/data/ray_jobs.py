"""`curate` and `cache` on a Ray cluster (`--ray auto|ADDRESS`): the job is cut into the parts that `--workers`
uses (every n-th video or sample from the i-th), one part per actor; each actor builds its models once and runs the
existing one-process function on its part. The actors read and write the same folders as this process, so on
several machines those paths must be one shared filesystem. Finished samples are skipped on a rerun, exactly as
without Ray. Ray is imported only here, only when `--ray` is given (requirements-ray.txt)."""
from __future__ import annotations

import argparse
import logging
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..model.config import CheckpointError
from .dataset import DatasetError, list_samples

INSTALL = "install it with pip install -r requirements-ray.txt"
CONNECT_TIMEOUT_S = 5.0
POLL_S = 0.5
ONE_LINE = (ValueError, CheckpointError, FileNotFoundError)  # what the command line prints as one error line
PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class RayOptions:
    address: str  # "auto", "host:6379" (the head's GCS) or "ray://host:10001" (Ray Client)
    actors: int | None = None  # None: the cluster's CPUs, or its GPUs / gpus_per_actor
    gpus_per_actor: float = 0.0


def add_ray_options(parser: argparse.ArgumentParser, models: str) -> None:
    """--ray, --ray-actors, --ray-gpus-per-actor of `curate` and `cache`."""
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run on a Ray cluster: auto (the cluster this machine belongs to, else a new local "
                             "one), HOST:6379 (its head) or ray://HOST:10001 (Ray Client); the folders must be on a "
                             "filesystem every node sees at the same path. Needs pip install -r requirements-ray.txt")
    parser.add_argument("--ray-actors", type=int, metavar="N",
                        help=f"actors, each holding {models} (default: the cluster's CPUs, or its GPUs divided by "
                             "--ray-gpus-per-actor)")
    parser.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="G",
                        help="GPUs reserved per actor, fractions allowed (0.5: two actors share a GPU; default 0)")


def options(args: argparse.Namespace) -> RayOptions:
    """The Ray options of a command; --workers is this machine's path and does not mix with them."""
    if args.workers > 1:
        raise DatasetError(f"--ray with --workers {args.workers}: choose one (--workers: processes on this machine, "
                           "--ray: actors on a cluster, --ray-actors N of them)")
    return RayOptions(args.ray, args.ray_actors, args.ray_gpus_per_actor)


def import_ray():
    try:
        import ray
    except ImportError:
        raise DatasetError(f"--ray: Ray is not installed; {INSTALL}") from None
    return ray


def check_reachable(address: str) -> None:
    """Something answers at the address, within CONNECT_TIMEOUT_S: ray.init retries a dead address for minutes."""
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep:
        host, port = port, ""
    try:
        port_number = int(port or (10001 if client else 6379))
    except ValueError:
        port_number = 0
    if not host or not 0 < port_number < 65536:
        raise DatasetError(f"--ray {address!r}: write auto, HOST:PORT (the cluster's head, e.g. head:6379) or "
                           "ray://HOST:PORT (Ray Client, e.g. ray://head:10001)")
    try:
        socket.create_connection((host.strip("[]"), port_number), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise DatasetError(f"--ray {address}: nothing answers at {host}:{port_number} ({why}); start the cluster "
                           "there (ray start --head) or fix the address") from None


@contextmanager
def ray_session(address: str):
    """Ray, connected to the cluster at `address` and disconnected after; a process already connected (a notebook,
    a test) keeps its connection, and its workers must import this package themselves."""
    ray = import_ray()
    if address != "auto":
        check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    # the actors run this process's code: the package goes to the cluster with the job, without the demo
    # generator's weights (tens of MB that curate and cache never read; its encoders and classifier go)
    env = {"py_modules": [str(PACKAGE)], "excludes": ["__pycache__", "model.safetensors", "demo/weights/*/"]}
    try:
        ray.init(address=None if address == "auto" else address, runtime_env=env, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise DatasetError(f"--ray {address}: no Ray cluster there ({str(err).splitlines()[0][:200]})") from None
    except ValueError as err:
        if "ray[client]" in str(err):  # ray:// without the client extra
            raise DatasetError(f"--ray {address}: Ray Client (ray://) is not installed; {INSTALL}") from None
        raise
    try:
        yield ray
    finally:
        ray.shutdown()


def plan_actors(ray, opts: RayOptions, items: int) -> tuple[int, float]:
    """(actors, CPUs per actor) for `items` videos or samples, refused when the cluster cannot hold them all at
    once (an actor that does not fit would wait forever)."""
    have = ray.cluster_resources()
    cpus, gpus, g = have.get("CPU", 0.0), have.get("GPU", 0.0), opts.gpus_per_actor
    if g < 0 or (g > 0 and g > gpus):
        raise DatasetError(f"--ray-gpus-per-actor {g:g}: the cluster has {gpus:g} GPUs; give a value in 0..{gpus:g}")
    n = opts.actors if opts.actors is not None else int(gpus // g if g > 0 else cpus)
    if n < 1:
        raise DatasetError(f"--ray-actors {n}: give 1 or more")
    cpus_each = 1.0 if g == 0 else min(1.0, cpus / n)  # GPU actors share the CPUs there are
    if n * cpus_each > cpus + 1e-9 or n * g > gpus + 1e-9:
        raise DatasetError(f"--ray-actors {n} need {n * cpus_each:g} CPUs and {n * g:g} GPUs; the cluster has "
                           f"{cpus:g} and {gpus:g}: ask for fewer")
    return max(1, min(n, items)), cpus_each


class Part:
    """An actor's share of a job. It serves two calls at once, so its progress is read while `run` works. Its
    models are loaded in `run`, not in __init__: an error in a Ray actor's __init__ loses its message."""

    def __init__(self):
        self.done = 0

    def progress(self) -> int:
        return self.done

    def count(self, done: int, *_) -> None:
        self.done = done


class CuratePart(Part):
    def run(self, part: tuple[int, int], videos: str, out: str, captions: str, backend: str, models: str | None):
        from .curate.pipeline import curate  # builds the backend and tagger once (make_backend, make_tagger)
        return curate(videos, out, captions, backend, models, part=part, progress=self.count)


class CachePart(Part):
    def run(self, part: tuple[int, int], data: str, out: str, encoders: str | tuple[str, str], cfg,
            encoder_id: str):
        import torch

        from ..encoders import load_encoders
        from .cache import build_cache
        vae, text = load_encoders(PACKAGE / encoders[1] if isinstance(encoders, tuple) else encoders)
        if torch.cuda.is_available():  # Ray shows an actor only the GPUs it reserved
            vae, text = OnDevice(vae, "cuda"), OnDevice(text, "cuda")
        return build_cache(data, out, vae, text, cfg, encoder_id, progress=self.count, part=part)


class OnDevice:
    """An encoder on a GPU that takes and returns CPU tensors, as build_cache hands them over."""

    def __init__(self, module, device: str):
        self.module, self.device = module.to(device), device

    def __getattr__(self, name):
        return getattr(self.module, name)

    def encode(self, x):
        import torch
        out = self.module.encode(x.to(self.device) if isinstance(x, torch.Tensor) else x)
        return tuple(t.cpu() for t in out) if isinstance(out, tuple) else out.cpu()


def run_parts(ray, cls: type, args: tuple, items: int, total: int, opts: RayOptions,
              progress: Callable[[int, int], None] | None) -> list:
    """One `cls` actor per part of `items`, each running cls.run(part, *args); their results in part order."""
    n, cpus = plan_actors(ray, opts, items)
    actor = ray.remote(cls).options(num_cpus=cpus, num_gpus=opts.gpus_per_actor, max_concurrency=2)
    actors = [actor.remote() for _ in range(n)]
    try:
        runs = [a.run.remote((i, n), *args) for i, a in enumerate(actors)]
        pending = list(runs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            ray.get(finished)  # an actor's error stops the job now, not when the others are done
            if progress:
                progress(total if not pending else sum(ray.get([a.progress.remote() for a in actors])), total)
        return ray.get(runs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ONE_LINE):  # a bad input or model folder: its line, not a remote traceback
            raise err.cause from None
        raise
    except ray.exceptions.RayActorError as err:  # a node lost, a process killed for memory
        raise SystemExit(f"a Ray actor died ({str(err).splitlines()[0][:200]}); run the same command again to "
                         "resume: finished samples are kept") from None
    finally:
        for a in actors:
            ray.kill(a)


def absolute(path) -> str | None:
    return str(Path(path).resolve()) if path else None  # the actors' working folder is not ours


def shipped(path) -> str | tuple[str, str]:
    """A file of this package (the demo encoders) as ("package", its path in the package): each actor reads its
    own copy then, shipped with the job; any other file by its absolute path."""
    path = Path(path).resolve()
    return ("package", path.relative_to(PACKAGE).as_posix()) if path.is_relative_to(PACKAGE) else str(path)


def curate_on_ray(opts: RayOptions, videos, out, captions, backend: str, models=None,
                  progress: Callable[[int, int], None] | None = None):
    """pipeline.curate on Ray: returns (the parts' reports merged into one, actors used)."""
    from .curate.pipeline import CurateReport, list_videos, read_captions
    files = list_videos(Path(videos))  # bad input fails here, before a cluster is reached
    if captions is None:
        raise DatasetError("curate needs the videos' captions: give --captions FILE (a JSON object from video file "
                           "name to caption)")
    read_captions(Path(captions), files)
    with ray_session(opts.address) as ray:
        args = (absolute(videos), absolute(out), absolute(captions), backend, absolute(models))
        reports = run_parts(ray, CuratePart, args, len(files), len(files), opts, progress)
    return CurateReport.merged(reports, files), len(reports)


def cache_parts_on_ray(opts: RayOptions, data, out, encoders, cfg, encoder_id: str,
                       progress: Callable[[int, int], None] | None = None):
    """build_cache's parts on Ray, shards only: returns (clips encoded, clips already there, actors used). The
    manifest is written by a one-process build_cache after, which adopts the shards (as with --workers)."""
    samples = list_samples(data)
    if not samples:
        raise DatasetError(f"{data}: no sample folders (each needs a sample.json); see the README's dataset format")
    with ray_session(opts.address) as ray:
        args = (absolute(data), absolute(out), shipped(encoders), cfg, encoder_id)
        reports = run_parts(ray, CachePart, args, len(samples), len(samples) * cfg.clips_per_sample, opts, progress)
    return sum(len(r.encoded) for r in reports), sum(len(r.skipped) for r in reports), len(reports)
