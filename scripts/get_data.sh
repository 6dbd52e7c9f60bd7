#!/usr/bin/env bash
# Fetch the real volumes used to train and evaluate the shipped default models, from package
# registries (pip, apt) only; see ../shared/DATA.md. Usage: scripts/get_data.sh [DIR]
#   DIR/train_mr  MNI ICBM152 2009a T1, pydeface mean head, pyradiomics brain1 (clinical T1c,
#                 6.5 mm slices: in-plane patches)
#   DIR/train_ct  pyradiomics lung1 (chest CT, 5 mm slices: in-plane patches)
#   DIR/val_ct    TotalSegmentator CT head atlas (checkpoint selection of the CT model only)
#   DIR/holdout   Colin27 T1 and pyradiomics brain2 (MR), pyradiomics lung2 (CT): never seen
set -euo pipefail
out="${1:-data}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/train_mr" "$out/train_ct" "$out/val_ct" "$out/holdout"
pip download -q --no-deps --only-binary :all: -d "$tmp" nilearn pydeface totalsegmentator
# the pyradiomics sdist needs numpy and versioneer to prepare its metadata
python -m pip install -q numpy versioneer setuptools wheel
pip download -q --no-deps --no-build-isolation -d "$tmp" pyradiomics==3.0.1
(cd "$tmp" && apt-get download mricron-data >/dev/null 2>&1) || {
  echo "apt-get download mricron-data failed (run apt-get update?)" >&2; exit 1; }
cd "$tmp"
unzip -q -o -j nilearn-*.whl "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" -d mr
unzip -q -o -j pydeface-*.whl "pydeface/data/mean_reg2mean.nii.gz" -d mr
unzip -q -o -j totalsegmentator-*.whl "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz" -d ct
tar xzf pyradiomics-3.0.1.tar.gz pyradiomics-3.0.1/data
dpkg-deb -x mricron-data_*.deb mricron
cd - >/dev/null
cp "$tmp"/mr/*.nii.gz "$tmp/pyradiomics-3.0.1/data/brain1_image.nrrd" "$out/train_mr/"
cp "$tmp/mricron/usr/share/mricron/templates/ch2.nii.gz" "$out/holdout/colin27_t1.nii.gz"
cp "$tmp/pyradiomics-3.0.1/data/lung1_image.nrrd" "$out/train_ct/"
cp "$tmp"/ct/ct_brain_atlas_1mm.nii.gz "$out/val_ct/"
cp "$tmp/pyradiomics-3.0.1/data/brain2_image.nrrd" "$tmp/pyradiomics-3.0.1/data/lung2_image.nrrd" "$out/holdout/"
ls -l "$out"/*
