#!/usr/bin/env bash
# A mypyc build of quota/ for measurement (issue 25's prototype; not what fairgpu runs).
#
#   tests/perf/build_mypyc.sh [OUT]        (default OUT: build/mypyc)
#
# Copies quota/ to OUT/quota and compiles every module but __init__ (lazy names through a
# module class swap) and limits (float-annotated bounds tested for int-ness: a compiled
# field would store them as C doubles) with mypyc, from its own venv (build/mypyc-venv,
# made on first use; needs gcc and the Python headers). Then
#   PYTHONPATH=OUT:. .venv/bin/python tests/perf/bench_simulate.py ...
# imports the compiled quota (check: quota.policy.__file__ ends in .so). Run scripts by
# path or with python -P, so the current directory does not shadow OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/mypyc}
VENV=$ROOT/build/mypyc-venv
PY=${PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$VENV/bin/mypyc" ]; then
  BASE=$("$PY" -c 'import sys; print(sys.base_prefix)')  # the same CPython as .venv: the .so must match it
  "$BASE/bin/python3" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "mypy==2.4.1" setuptools
fi
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cp -r "$ROOT/quota" "$OUT/quota"
find "$OUT/quota" -name __pycache__ -prune -exec rm -rf {} +
cd "$OUT"
mods=()
for f in quota/*.py; do
  case "$(basename "$f" .py)" in __init__|limits) ;; *) mods+=("$f") ;; esac
done
start=$(date +%s)
"$VENV/bin/mypyc" --disable-error-code annotation-unchecked "${mods[@]}" > "$OUT/mypyc.log" 2>&1 \
  || { tail -40 "$OUT/mypyc.log"; exit 1; }
rm -rf "$OUT/build"
echo "compiled ${#mods[@]} modules of quota/ into $OUT in $(( $(date +%s) - start )) s" >&2
