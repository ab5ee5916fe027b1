#!/usr/bin/env bash
# Create .venv from uv.lock with a pinned uv (installed into .tools/ on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .tools/bin/uv ]] || [[ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/"
  "$PYTHON" -m venv .tools
  .tools/bin/pip install --quiet "uv==$UV_VERSION"
fi
export UV_PYTHON="$PYTHON" UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
echo "bootstrap: syncing .venv from uv.lock"
.tools/bin/uv sync --frozen --extra test --quiet
