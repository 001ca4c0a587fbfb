#!/usr/bin/env bash
# The two commands a new user needs:
#   ./run_local.sh [PIPELINE FLAGS]   set up .venv if needed, then score the example recordings
#                                     (or --input/--output of your own) with BirdNET into out/
#   ./run_local.sh test [PYTEST ARGS] set up .venv if needed, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall whenever setup.py changes; a stamp file remembers what is installed.
stamp="$venv/.installed-$(sha1sum setup.py | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e '.[perch,test]'
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

if [ "${1:-}" = test ]; then
  shift
  exec "$venv/bin/python" -m pytest "$@"
fi

defaults=()
[[ " $* " == *" --input"* ]] || defaults+=(--input 'examples/audio/*.wav')
[[ " $* " == *" --output"* ]] || defaults+=(--output out)
exec "$venv/bin/python" -m pipeline.run "${defaults[@]}" "$@"
