#!/usr/bin/env bash
# Build a Python environment that runs a real ComfyUI headless on CPU for the integration tests.
#
#   scripts/setup_comfyui.sh COMFYUI_DIR [VENV]
#
# COMFYUI_DIR: a ComfyUI checkout (0.3.64 or newer; ComfyUI is not on PyPI). If it does not exist but
#   COMFYUI_GIT (a git dir, e.g. a bare clone) is set, HEAD of COMFYUI_GIT is exported there first
#   (blobs missing from a partial snapshot are skipped: only a tokenizer json over 4 MiB, not needed).
# VENV: where to create the environment (default: COMFYUI_DIR/.venv). Kept outside this repository.
#
# Installs torch==2.14.1 torchvision==0.29.1 (a CUDA build that runs on CPU with --cpu), ComfyUI's
# requirements without the torch lines, requests (0.8.0 imports it but does not list it), the test
# tools (pytest, websocket-client, jsonschema, comfy-cli for its UI->API converter, pathspec, selenium for
# the browser tests) and this pack's requirements.txt. About 2 minutes and 7 GB. Then run the tests with:
#
#   COMFYUI_DIR=COMFYUI_DIR VENV/bin/python -m pytest -m integration tests
#   COMFYUI_DIR=COMFYUI_DIR VENV/bin/python -m pytest -m browser tests   # also needs a Chromium and its
#                                                    # driver (Debian: apt-get install chromium chromium-driver)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
comfy="${1:?usage: scripts/setup_comfyui.sh COMFYUI_DIR [VENV]}"
venv="${2:-$comfy/.venv}"

if [ ! -f "$comfy/main.py" ]; then
  if [ -n "${COMFYUI_GIT:-}" ]; then
    mkdir -p "$comfy"
    git -C "$COMFYUI_GIT" ls-tree -r HEAD | while read -r mode type sha path; do
      [ "$type" = blob ] || continue
      if git -C "$COMFYUI_GIT" cat-file -e "$sha" 2>/dev/null; then
        mkdir -p "$comfy/$(dirname "$path")"
        git -C "$COMFYUI_GIT" cat-file blob "$sha" > "$comfy/$path"
        if [ "$mode" = 100755 ]; then chmod +x "$comfy/$path"; fi
      else
        echo "skipped (absent from the snapshot): $path" >&2
      fi
    done
  else
    echo "$comfy is not a ComfyUI checkout (no main.py); set COMFYUI_GIT to export one" >&2
    exit 1
  fi
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q torch==2.14.1 torchvision==0.29.1
req="$(mktemp)"
grep -v -E '^\s*torch(vision|audio)?\s*([<>=!~].*)?$' "$comfy/requirements.txt" > "$req"
"$pip" install -q -r "$req"
rm -f "$req"
"$pip" install -q requests pytest websocket-client jsonschema pathspec comfy-cli selenium -r "$here/requirements.txt"
"$venv/bin/python" - "$comfy" <<'PY'
import sys, torch, comfy_cli.workflow_to_api  # noqa: F401  (the converter the tests use)
ver = open(sys.argv[1] + "/comfyui_version.py").read().split("__version__")[1].split("\"")[1]
print(f"ComfyUI {ver} environment ready: torch {torch.__version__}")
PY
command -v chromedriver >/dev/null || echo "no chromedriver: the browser tests will be skipped (apt-get install chromium chromium-driver)"
