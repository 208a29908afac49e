#!/bin/bash
# Evaluations behind the README results table (offline protocol).
# Usage: run_evals.sh [name ...]   (default: every evaluation below); each waits for its training
# run (run_all.sh, same BIJDIFF_REPO and BIJDIFF_RUNS) to finish, writes $BIJDIFF_RUNS/eval/<name>
# and copies its metrics.json to <name>.json in BIJDIFF_RESULTS (default: this directory).
RESULTS=$(realpath "${BIJDIFF_RESULTS:-$(dirname "$0")}")
cd "${BIJDIFF_REPO:-$(dirname "$0")/../../..}" || exit 1
S=$(realpath -m "${BIJDIFF_RUNS:-runs}")/study
E=$(realpath -m "${BIJDIFF_RUNS:-runs}")/eval
mkdir -p $E
J="judge_ckpt=$S/ar/checkpoints/best.ckpt"
SAMPLE="mode=sample sample.num_samples=64"
declare -A EVALS=(  # name -> "training run | eval.py arguments"
  [ar-ppl]="ar|"
  [standard-ppl]="standard|"
  [bijective-ppl]="bijective|"
  [standard-uniform-ppl]="standard-uniform|"
  [bijective-uniform-ppl]="bijective-uniform|"
  [ar-ppl-first256]="ar|eval.exact=true eval.max_sequences=256"
  [standard-ppl-first256]="standard|eval.exact=true eval.max_sequences=256"
  [bijective-ppl-first256]="bijective|eval.exact=true eval.max_sequences=256"
  [ar-sample]="ar|$SAMPLE $J"
  [standard-sample-analytic64]="standard|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [standard-sample-ordered]="standard|$SAMPLE sample.sampler=ordered $J"
  [standard-sample-analytic16]="standard|$SAMPLE sample.sampler=analytic sample.steps=16 $J"
  [standard-sample-analytic256]="standard|$SAMPLE sample.sampler=analytic sample.steps=256 $J"
  [bijective-sample-analytic64]="bijective|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [bijective-sample-ordered]="bijective|$SAMPLE sample.sampler=ordered $J"
  [standard-uniform-sample-analytic64]="standard-uniform|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [bijective-uniform-sample-analytic64]="bijective-uniform|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [ar-sample-t1.25]="ar|$SAMPLE sample.temperature=1.25 $J"
  [ar-sample-t1.5]="ar|$SAMPLE sample.temperature=1.5 $J"
  [ar-sample-t1.75]="ar|$SAMPLE sample.temperature=1.75 $J"
  [standard-notime-ppl]="standard-notime|"
  [standard-notime-sample-analytic16]="standard-notime|$SAMPLE sample.sampler=analytic sample.steps=16 $J"
  [standard-notime-sample-analytic64]="standard-notime|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [standard-notime-sample-analytic256]="standard-notime|$SAMPLE sample.sampler=analytic sample.steps=256 $J"
  [standard-notime-sample-ordered]="standard-notime|$SAMPLE sample.sampler=ordered $J"
  [bijective-sample-analytic16]="bijective|$SAMPLE sample.sampler=analytic sample.steps=16 $J"
  [bijective-sample-analytic256]="bijective|$SAMPLE sample.sampler=analytic sample.steps=256 $J"
  [bijective-affine-ppl]="bijective-affine|"
  [bijective-affine-sample-analytic64]="bijective-affine|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [hybrid-ppl]="hybrid|"
  [hybrid-sample-analytic64]="hybrid|$SAMPLE sample.sampler=analytic sample.steps=64 $J"
  [standard-seed1-ppl]="standard-seed1|"
  [bijective-seed1-ppl]="bijective-seed1|"
  [bijective-affine-seed1-ppl]="bijective-affine-seed1|"
)
ALL="ar-ppl standard-ppl bijective-ppl standard-uniform-ppl bijective-uniform-ppl ar-ppl-first256
standard-ppl-first256 bijective-ppl-first256 ar-sample standard-sample-analytic64 standard-sample-ordered
bijective-sample-analytic64 bijective-sample-ordered standard-uniform-sample-analytic64
bijective-uniform-sample-analytic64 ar-sample-t1.25 ar-sample-t1.5 ar-sample-t1.75 standard-notime-ppl
standard-notime-sample-analytic16 standard-notime-sample-analytic64 standard-notime-sample-analytic256
standard-notime-sample-ordered bijective-sample-analytic16 bijective-sample-analytic256 bijective-affine-ppl
bijective-affine-sample-analytic64 hybrid-ppl hybrid-sample-analytic64 standard-sample-analytic16
standard-sample-analytic256 standard-seed1-ppl bijective-seed1-ppl
bijective-affine-seed1-ppl"
for name in ${@:-$ALL}; do
  [ -n "${EVALS[$name]}" ] || { echo "unknown evaluation $name; choose from: ${!EVALS[*]}" >&2; exit 1; }
  run=${EVALS[$name]%%|*}; args=${EVALS[$name]#*|}
  for needed in $run ar; do
    [ -e $S/$needed.log ] || { echo "no training run $S/$needed: run run_all.sh $needed first" >&2; exit 1; }
    while ! grep -q "^$needed " $S/done.txt 2>/dev/null; do sleep 30; done
  done
  start=$(date +%s)
  python eval.py ckpt_path=$S/$run/checkpoints/best.ckpt $args device=cpu hydra.run.dir=$E/$name > $E/$name.log 2>&1
  rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" >> $E/done.txt
  [ $rc = 0 ] && cp $E/$name/metrics.json $RESULTS/$name.json
done
