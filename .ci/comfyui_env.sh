#!/usr/bin/env bash
# Make (or reuse) the environment the real-ComfyUI suite runs in, then print the variables that point the suite at it.
#
#   bash .ci/comfyui_env.sh COMFYUI_DIR      # sets up, then prints `export NAME=value` lines on stdout
#
# What it installs, in its own virtual environment under $ALCHEMINT_CI_CACHE (default ~/.cache/alchemint-ci):
# CPU torch first (so nothing resolves a CUDA build), ComfyUI's requirements without torch/torchvision/torchaudio/
# spandrel, spandrel and torchvision 0.28.0 without their dependencies (torchvision's two unguarded fake-op
# registrations guarded, as tests/COMFYUI_E2E.md says), requests, this pack's requirements and playwright. Also the
# newest comfyui-frontend-package (for the second frontend) and Debian's chromium when it is missing. A stamp of the
# inputs makes a second run reuse all of it. Progress goes to stderr.
set -euo pipefail

COMFY=$(cd "${1:?usage: comfyui_env.sh COMFYUI_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ALCHEMINT_CI_CACHE:-$HOME/.cache/alchemint-ci}
VENV=$CACHE/comfy-venv
FRONTENDS=$CACHE/frontends
TORCH=torch==2.13.0
TORCHVISION=torchvision==0.28.0
log() { echo "[comfyui-env] $*" >&2; }
mkdir -p "$CACHE" "$FRONTENDS"

# --- the browser -------------------------------------------------------------------------------------------------
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
    log "installing Debian's chromium"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >&2
    CHROMIUM=$(command -v chromium)
fi

# --- the virtual environment -------------------------------------------------------------------------------------
stamp=$(cat "$0" "$ROOT/.ci/guard_torchvision.py" "$COMFY/requirements.txt" "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building $VENV (first run; later runs reuse it)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    pip() { "$VENV/bin/python" -m pip install --quiet "$@" >&2; }
    pip "$TORCH"
    grep -v -E '^\s*(torch|torchvision|torchaudio|spandrel)\s*([<>=~!;#].*)?$' "$COMFY/requirements.txt" \
        > "$CACHE/comfy-requirements.txt"
    pip -r "$CACHE/comfy-requirements.txt" "$TORCH"
    pip --no-deps spandrel "$TORCHVISION"
    # torchvision's wheel is built for CUDA torch: its C++ ops do not load beside CPU torch, and two fake-op
    # registrations then raise at import. Guard them so `import torchvision` (needed by comfy/sd.py) works.
    "$VENV/bin/python" "$ROOT/.ci/guard_torchvision.py" >&2
    pip requests playwright -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt" "$TORCH"
    "$VENV/bin/python" -c "import torch, torchvision, spandrel, playwright; print('torch', torch.__version__, \
        'torchvision', torchvision.__version__)" >&2
    echo "$stamp" > "$VENV/.stamp"
else
    log "reusing $VENV"
fi

# --- the newest frontend -----------------------------------------------------------------------------------------
newest=$("$VENV/bin/python" -m pip index versions comfyui-frontend-package 2>/dev/null \
         | sed -n 's/^comfyui-frontend-package (\(.*\))$/\1/p' || true)
if [ -z "$newest" ]; then  # no registry answer: the newest one installed before, if any
    newest=$(ls "$FRONTENDS" 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$newest" ] || { log "cannot find comfyui-frontend-package's newest version"; exit 1; }
fi
if [ ! -d "$FRONTENDS/$newest/comfyui_frontend_package/static" ]; then
    log "installing comfyui-frontend-package $newest"
    "$VENV/bin/python" -m pip install --quiet --no-deps --target "$FRONTENDS/$newest.tmp" \
        "comfyui-frontend-package==$newest" >&2
    mv "$FRONTENDS/$newest.tmp" "$FRONTENDS/$newest"
fi

echo "export COMFYUI_DIR=$COMFY"
echo "export COMFYUI_PYTHON=$VENV/bin/python"
echo "export COMFYUI_FRONTEND_NEW=$FRONTENDS/$newest/comfyui_frontend_package/static"
echo "export CHROMIUM=$CHROMIUM"
