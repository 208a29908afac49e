#!/bin/bash
# Evaluations behind the README results table (offline protocol), run from a snapshot.
cd "${BIJDIFF_REPO:-/tmp/snap2}"  # the repository (a snapshot of it when it ran)
S=/work/runs/study
ev() {  # name, checkpoint run, args...
  name=$1; run=$2; shift 2
  start=$(date +%s)
  python eval.py ckpt_path=$S/$run/checkpoints/best.ckpt "$@" device=cpu hydra.run.dir=/work/runs/eval/$name \
    > /work/runs/eval/$name.log 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" >> /work/runs/eval/done.txt
}
J="judge_ckpt=$S/ar/checkpoints/best.ckpt"
for m in ar standard bijective; do ev $m-ppl $m; done
for m in ar standard bijective; do ev $m-ppl-first256 $m eval.exact=true eval.max_sequences=256; done
ev ar-sample ar mode=sample sample.num_samples=64 $J
for m in standard bijective; do
  ev $m-sample-analytic64 $m mode=sample sample.sampler=analytic sample.steps=64 sample.num_samples=64 $J
  ev $m-sample-ordered $m mode=sample sample.sampler=ordered sample.num_samples=64 $J
done
ev bijective-invert bijective mode=invert invert.batches=4
for steps in 16 256; do ev standard-sample-analytic$steps standard mode=sample sample.steps=$steps sample.num_samples=64 $J; done
ev standard-sample-euler64 standard mode=sample sample.sampler=euler sample.steps=64 sample.num_samples=64 $J
while ! grep -q "^standard-uniform " $S/done.txt; do sleep 30; done
ev standard-uniform-ppl standard-uniform
ev standard-uniform-sample-analytic64 standard-uniform mode=sample sample.steps=64 sample.num_samples=64 $J
while ! grep -q "^bijective-uniform " $S/done.txt; do sleep 30; done
ev bijective-uniform-ppl bijective-uniform
ev bijective-uniform-sample-analytic64 bijective-uniform mode=sample sample.steps=64 sample.num_samples=64 $J
