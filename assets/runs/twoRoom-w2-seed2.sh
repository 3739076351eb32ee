#!/bin/bash
# twoRoom world version 2, training seed 2: Sub-JEPA K=16 (the main command's recipe) and LeWM, one after the other,
# each alone at 2 threads (data/twoRoom-64px collected by this code)
cd /work/main
for run in "k16-s2 --subspaces 16 --seed 2" "lewm-s2 --subspaces 0 --seed 2"; do
  set -- $run; name=$1; shift
  date; start=$(date +%s)
  python train.py --env twoRoom --recipe cpu "$@" --out runs/w2-$name.pt > runs/w2-$name.train.out 2>&1
  echo "$name train rc $? $(( $(date +%s) - start )) s"
  start=$(date +%s)
  python plan.py --env twoRoom --ckpt runs/w2-$name.pt --probe --prediction --json runs/w2-$name.json > runs/w2-$name.plan.out 2>&1
  echo "$name plan rc $? $(( $(date +%s) - start )) s"
done
date
