#!/bin/bash
# Study training runs on the offline protocol, from a snapshot of the working tree at launch.
# Usage: run_all.sh [name ...]   (default: every run below, in this order)
cd "${BIJDIFF_REPO:-/tmp/snap}"  # the repository (a snapshot of it when it ran)
D=${BIJDIFF_DATA:-/work/shared/data/wikitext-2}
S=${BIJDIFF_RUNS:-/work/runs}/study
ls $D >/dev/null || exit 1
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
)
for name in ${@:-ar standard bijective standard-uniform bijective-uniform standard-notime bijective-affine hybrid}; do
  start=$(date +%s)
  python train.py experiment=quick ${ARGS[$name]} data.files.train=$D/wiki.valid.tokens \
    data.files.validation=$D/wiki.test.tokens data.files.test=$D/wiki.test.tokens \
    callbacks.progress.style=plain hydra.run.dir=$S/$name > $S/$name.log 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" >> $S/done.txt
done
