#!/bin/bash
# Study training runs on the offline protocol.
# Usage: run_all.sh [name ...]   (default: every run below, in this order)
# Environment: BIJDIFF_REPO, the checkout to run (default: this one; the study ran from snapshots
# of the tree, see README.md here), BIJDIFF_DATA (default ../shared/data/wikitext-2 beside it),
# BIJDIFF_RUNS (default runs/ in it): runs go to $BIJDIFF_RUNS/study/<name>, lines to done.txt.
cd "${BIJDIFF_REPO:-$(dirname "$0")/../../..}" || exit 1
D=$(realpath -m "${BIJDIFF_DATA:-../shared/data/wikitext-2}")
S=$(realpath -m "${BIJDIFF_RUNS:-runs}")/study
[ -f $D/wiki.valid.tokens ] || { echo "no $D/wiki.valid.tokens: set BIJDIFF_DATA to the WikiText-2 directory" >&2; exit 1; }
mkdir -p $S
declare -A ARGS=(
  [ar]="model=ar"
  [standard]="model=standard"
  [bijective]="model=bijective"
  [standard-uniform]="model=standard diffusion=uniform"
  [bijective-uniform]="model=bijective diffusion=uniform"
  [standard-notime]="model=standard model.time_conditioning=false"
  [bijective-affine]="model=bijective_affine"
  [hybrid]="model=hybrid"
  [standard-seed1]="model=standard seed=1"
  [bijective-seed1]="model=bijective seed=1"
  [bijective-affine-seed1]="model=bijective_affine seed=1"
)
for name in ${@:-ar standard bijective standard-uniform bijective-uniform standard-notime bijective-affine hybrid standard-seed1 bijective-seed1 bijective-affine-seed1}; do
  [ -n "${ARGS[$name]}" ] || { echo "unknown run $name; choose from: ${!ARGS[*]}" >&2; exit 1; }
  start=$(date +%s)
  python train.py experiment=quick ${ARGS[$name]} data.files.train=$D/wiki.valid.tokens \
    data.files.validation=$D/wiki.test.tokens data.files.test=$D/wiki.test.tokens \
    callbacks.progress.style=plain hydra.run.dir=$S/$name > $S/$name.log 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" >> $S/done.txt
done
