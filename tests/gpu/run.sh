#!/usr/bin/env bash
# The GPU check on a lent GPU machine, in one command (docs/benchmarks.md, "The GPU check").
# That machine has PyTorch, nvidia-ml-py, prometheus-client, click, rich, numpy and httpx;
# the rest of fairgpu's dependencies travel as wheels in .whl/:
#   bash ../shared/device/prepare-wheels.sh            # here, once: writes .whl/ (carry [".whl"])
#   bash tests/gpu/run.sh OUTDIR [tests/gpu/check.py options]    # there
# Writes OUTDIR/check.json; exits 0 only if every check passed. Without a GPU it exits 1
# (tests/gpu/check.py --allow-cpu is the CPU path, for this project's own tests).
set -euo pipefail
OUT=$(realpath -m "${1:?usage: bash tests/gpu/run.sh OUTDIR [options of tests/gpu/check.py]}")
shift
cd "$(dirname "$0")/../.."
SITE=${FAIRGPU_SITE:-/tmp/site}
if [ -d .whl ] && [ ! -f "$SITE/.fairgpu-wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
  touch "$SITE/.fairgpu-wheels"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 tests/gpu/check.py "$OUT" "$@"
