#!/usr/bin/env bash
# Fetch the real volumes used to train and evaluate the shipped default models, from package
# registries (pip, apt) only; see ../shared/DATA.md. Usage: scripts/get_data.sh [DIR]
#   DIR/train_mr  MNI ICBM152 2009a T1, pydeface mean head, pyradiomics brain1 (clinical T1c,
#                 6.5 mm slices: in-plane patches)
#   DIR/train_ct  pyradiomics lung1 (chest CT, 5 mm slices: in-plane patches)
#   DIR/val_ct    TotalSegmentator CT head atlas (checkpoint selection of the CT model only)
#   DIR/holdout   Colin27 T1 and pyradiomics brain2 (MR), pyradiomics lung2 (CT): never seen
#   DIR/extra_mr  INIA19 macaque T1 template (0.5 mm), pyradiomics breast1 (breast MR crop)
#   DIR/extra_ct  TotalSegmentator test CT angiography of the chest (1.5 mm iso)
#   DIR/holdout_extra  Colin27 on a 0.5 mm grid (ch2better; same subject as holdout/colin27,
#                 so evaluation only) and the InVesalius head CT (GPL-2 data: evaluation only,
#                 never train a shipped model on it), dipy's b0 EPI (128x128 at 2 mm, 10 tilted
#                 slices; a second real EPI besides nibabel's example4d)
#   DIR/epi_train the same b0 EPI, for configs/experiment_mr_epi.yaml only (an experiment that
#                 trains on it and holds nibabel's EPI out; no shipped model learnt from it)
#   DIR/slices    single 2D DICOM slices of pydicom-data (MIT): MR 1024² and CT 512², each as
#                 stored (*_UNCR) and decoded from lossy JPEG 2000 (693_UNCI): evaluation only
# See docs/training_data.md for shapes, spacings, licences and what each is good for.
set -euo pipefail
mkdir -p "${1:-data}"
out="$(cd "${1:-data}" && pwd)"  # absolute: the steps below run inside a scratch folder
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/train_mr" "$out/train_ct" "$out/val_ct" "$out/holdout" \
  "$out/extra_mr" "$out/extra_ct" "$out/holdout_extra" "$out/epi_train" "$out/slices"
pip download -q --no-deps --only-binary :all: -d "$tmp" nilearn pydeface totalsegmentator
pip download -q --no-deps --only-binary :all: -d "$tmp" dipy==1.12.1
pip download -q --no-deps --only-binary :all: -d "$tmp" pydicom-data==1.0.0
# the pyradiomics sdist needs numpy and versioneer to prepare its metadata
python -m pip install -q numpy versioneer setuptools wheel nibabel
pip download -q --no-deps --no-build-isolation -d "$tmp" pyradiomics==3.0.1
# the totalsegmentator sdist (not the wheel) carries its test CT volumes
pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$tmp/sdist" totalsegmentator==2.18.0
for deb in mricron-data invesalius-examples; do
  (cd "$tmp" && apt-get download "$deb" >/dev/null 2>&1) || {
    echo "apt-get download $deb failed (run apt-get update?)" >&2; exit 1; }
done
cd "$tmp"
unzip -q -o -j nilearn-*.whl "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" -d mr
unzip -q -o -j pydeface-*.whl "pydeface/data/mean_reg2mean.nii.gz" -d mr
unzip -q -o -j totalsegmentator-*.whl "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz" -d ct
unzip -q -o -j dipy-*.whl "dipy/data/files/S0_10slices.nii.gz" -d epi
for f in MR2_UNCR 693_UNCR 693_UNCI; do
  unzip -q -o -j pydicom_data-*.whl "data_store/data/$f.dcm" -d "$out/slices"
done
tar xzf pyradiomics-3.0.1.tar.gz pyradiomics-3.0.1/data
dpkg-deb -x mricron-data_*.deb mricron
tar xzf sdist/totalsegmentator-2.18.0.tar.gz \
  totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz
dpkg-deb -x invesalius-examples_*.deb invesalius
mkdir -p inv3 && tar xf invesalius/usr/share/doc/invesalius-examples/examples/Cranium.inv3 -C inv3
cd - >/dev/null
cp "$tmp"/mr/*.nii.gz "$tmp/pyradiomics-3.0.1/data/brain1_image.nrrd" "$out/train_mr/"
cp "$tmp/mricron/usr/share/mricron/templates/ch2.nii.gz" "$out/holdout/colin27_t1.nii.gz"
cp "$tmp/pyradiomics-3.0.1/data/lung1_image.nrrd" "$out/train_ct/"
cp "$tmp"/ct/ct_brain_atlas_1mm.nii.gz "$out/val_ct/"
cp "$tmp/pyradiomics-3.0.1/data/brain2_image.nrrd" "$tmp/pyradiomics-3.0.1/data/lung2_image.nrrd" "$out/holdout/"
# extra volumes (issue #12)
tpl="$tmp/mricron/usr/share/mricron/templates"
cp "$tpl/inia19-t1-brain.nii.gz" "$out/extra_mr/inia19_macaque_t1_brain_0p5mm.nii.gz"
cp "$tmp/pyradiomics-3.0.1/data/breast1_image.nrrd" "$out/extra_mr/"
cp "$tmp/totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz" \
  "$out/extra_ct/totalseg_cta_chest_1p5mm.nii.gz"
cp "$tpl/ch2better.nii.gz" "$out/holdout_extra/colin27_t1_0p5mm.nii.gz"
# dipy's b0 (BSD-3): its single volume as a 3D image, the header (tilted sform) kept
python - "$tmp/epi/S0_10slices.nii.gz" "$out/holdout_extra/dipy_s0_epi_2mm.nii.gz" <<'PY'
import sys
import nibabel as nib
import numpy as np
img = nib.load(sys.argv[1])
data = np.asarray(img.dataobj)[..., 0]
out = nib.Nifti1Image(data, img.affine, img.header)
out.header.set_data_shape(data.shape)
nib.save(out, sys.argv[2])
PY
cp "$out/holdout_extra/dipy_s0_epi_2mm.nii.gz" "$out/epi_train/"
# InVesalius project (.inv3): a raw int16 matrix (slices, rows, cols) plus a plist with spacing
python - "$tmp"/inv3/*/main.plist "$out/holdout_extra/invesalius_ct_head.nii.gz" <<'PY'
import os, plistlib, sys
import nibabel as nib
import numpy as np
meta = plistlib.load(open(sys.argv[1], "rb"))
m = meta["matrix"]
a = np.fromfile(os.path.join(os.path.dirname(sys.argv[1]), m["filename"]), dtype=m["dtype"])
a = a.reshape(m["shape"]).transpose(2, 1, 0)  # -> (x, y, z)
sx, sy, sz = meta["spacing"]
img = nib.Nifti1Image(np.ascontiguousarray(a), np.diag([sx, sy, sz, 1.0]))
img.header.set_xyzt_units("mm")
nib.save(img, sys.argv[2])
PY
ls -l "$out"/*
