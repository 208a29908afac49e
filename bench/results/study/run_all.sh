#!/bin/bash
# Study runs on the offline protocol, from a snapshot of the working tree at launch.
cd "${BIJDIFF_REPO:-/tmp/snap}"  # the repository (a snapshot of it when it ran)
D=/work/shared/data/wikitext-2
ls $D >/dev/null || exit 1
run() {
  name=$1; shift
  start=$(date +%s)
  python train.py experiment=quick "$@" data.files.train=$D/wiki.valid.tokens data.files.validation=$D/wiki.test.tokens \
    data.files.test=$D/wiki.test.tokens callbacks.progress.style=plain hydra.run.dir=/work/runs/study/$name > /work/runs/study/$name.log 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" >> /work/runs/study/done.txt
}
run ar model=ar
run standard model=standard
run bijective model=bijective
run standard-uniform model=standard diffusion=uniform
run bijective-uniform model=bijective diffusion=uniform
