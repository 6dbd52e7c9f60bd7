#!/usr/bin/env bash
# Build medsr's sdist and wheel, check what they carry (scripts/check_dist.py), install the
# wheel (not editable) into a fresh virtual environment and run the README's quickstart from
# an empty folder: medsr sample, medsr upscale with the default model, medsr report.
# Usage: bash scripts/check_wheel.sh   (from the repository; .ci/run calls it after the tests)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log"; echo "error: python -m build failed" >&2; exit 1; }
python "$root/scripts/check_dist.py" "$work/dist"
python -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "torch==2.13.0" \
    "$work"/dist/medsr-*.whl >"$work/pip.log" 2>&1 \
    || { tail -20 "$work/pip.log"; echo "error: the wheel did not install" >&2; exit 1; }
mkdir "$work/empty"
cd "$work/empty"
export PATH="$work/venv/bin:$PATH"
# the installed copy runs, not the checkout
python -c "import medsr, sys; sys.exit(0 if medsr.__file__.startswith('$work/venv') else 1)" \
    || { echo "error: medsr was not imported from the installed wheel" >&2; exit 1; }
version=$(python -c "import medsr; print(medsr.__version__)")
[ "$(medsr --version)" = "medsr $version" ] || { echo "error: medsr --version" >&2; exit 1; }
medsr sample brain.nrrd
medsr upscale brain.nrrd --report brain.html
medsr report brain_sr.nrrd --input brain.nrrd -o again.html
info=$(medsr info brain_sr.nrrd)  # not piped into grep -q: its early exit fails the pipe
grep -q "made by medsr $version" <<<"$info" \
    || { echo "error: the output does not name medsr $version" >&2; exit 1; }
grep -q "medsr $version" brain.html || { echo "error: the report does not name medsr $version" >&2; exit 1; }
ls -l brain.nrrd brain_sr.nrrd brain.html again.html
echo "wheel check passed: medsr $version installed from its wheel ran the quickstart"
