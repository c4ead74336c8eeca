#!/usr/bin/env bash
# Creates (or refreshes) segdet's Python environment. Idempotent: when requirements.txt,
# setup.py and this script are unchanged since the last successful run, it does nothing.
#
#   tools/setup_env.sh                      # isolated environment in ./.venv (the default)
#   SEGDET_PYTHON=/path/to/python tools/setup_env.sh
#                                           # use an existing environment instead (e.g. one with
#                                           # torch + detectron2 built from source for your GPU):
#                                           # installed torch/torchvision/detectron2 are kept.
#
# Prints the interpreter to use on its last line ("python: <path>").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DETECTRON2_WHEEL="sal-detectron2==0.7.2"   # upstream detectron2 main a59f056 (2024-04), Python only
WHEEL_DIR="$ROOT/.cache/wheels"
log() { echo "[setup] $*" >&2; }

if [[ -n "${SEGDET_PYTHON:-}" ]]; then
  PY="$SEGDET_PYTHON"
  STAMP_DIR="$ROOT/.cache"
else
  VENV="${SEGDET_VENV:-$ROOT/.venv}"
  PY="$VENV/bin/python"
  STAMP_DIR="$VENV"
  if [[ ! -x "$PY" ]]; then
    BASE_PY="$(command -v python3.11 || command -v python3)"
    log "creating virtual environment $VENV with $BASE_PY"
    "$BASE_PY" -m venv "$VENV"
  fi
fi
mkdir -p "$STAMP_DIR"
STAMP="$STAMP_DIR/.segdet-setup-stamp"
WANT="$(cat requirements.txt setup.py "$0" | sha256sum | cut -d' ' -f1) $PY"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$PY" -c "import segdet" 2>/dev/null; then
  log "environment up to date"
  echo "python: $PY"
  exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
pin() { grep -E "^$1==" requirements.txt; }

# torch / torchvision: keep a working pair (GPU users' own builds), otherwise install the pins.
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing $(pin torch) $(pin torchvision) (large download, a few minutes)"
  "${PIP[@]}" install "$(pin torch)" "$(pin torchvision)"
fi

log "installing pinned dependencies"
grep -vE '^(torch|torchvision)==' requirements.txt | "${PIP[@]}" install -q -r /dev/stdin

# detectron2: keep a working install (e.g. built from source); otherwise the pinned wheel.
if "$PY" -c "import detectron2" 2>/dev/null; then
  log "keeping installed detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)')"
else
  log "installing $DETECTRON2_WHEEL (cp310 wheel, pure Python, via pypa installer)"
  mkdir -p "$WHEEL_DIR"
  "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$WHEEL_DIR" "$DETECTRON2_WHEEL"
  WHEEL="$(ls "$WHEEL_DIR"/sal_detectron2-*.whl | head -n1)"
  "$PY" -m installer "$WHEEL"
fi

log "installing segdet (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" >"$STAMP_DIR/.segdet-pip.log" 2>&1 \
  || { cat "$STAMP_DIR/.segdet-pip.log" >&2; exit 1; }
"$PY" -c "import segdet, detectron2, torch; print('[setup] segdet', segdet.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__)" >&2
echo "$WANT" > "$STAMP"
echo "python: $PY"
