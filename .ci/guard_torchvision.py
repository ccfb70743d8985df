"""Guard torchvision's two unguarded fake-op registrations so `import torchvision` works beside a CPU-only torch.

PyPI's torchvision 0.28.0 is built against CUDA torch; beside the CPU build of torch 2.13.0 its C++ ops do not load,
and `@torch.library.register_fake("torchvision::nms")` (and `qnms`) then raise at import. ComfyUI imports torchvision
at start-up (comfy/sd.py) but never runs those ops on our path. Run with the virtual environment's python."""
import pathlib
import re
import site

HELPER = '''def _fake_if_defined(name):  # added by alchemint .ci/guard_torchvision.py: skip ops whose library did not load
    def deco(fn):
        try:
            return torch.library.register_fake(name)(fn)
        except (RuntimeError, AttributeError, ValueError):
            return fn
    return deco


'''

for sp in site.getsitepackages():
    f = pathlib.Path(sp) / "torchvision" / "_meta_registrations.py"
    if not f.exists() or "_fake_if_defined" in f.read_text():
        continue
    src = f.read_text()
    fixed, n = re.subn(r"^@torch\.library\.register_fake\(", "@_fake_if_defined(", src, flags=re.M)
    fixed = fixed.replace("\n@functools.lru_cache", "\n" + HELPER + "@functools.lru_cache", 1)
    f.write_text(fixed)
    print(f"guarded {n} fake-op registrations in {f}")
