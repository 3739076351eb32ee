#!/bin/bash
# after the main command: LeWM at seed 0, Sub-JEPA K=16 and LeWM at seed 1, on twoRoom world version 2 (data/twoRoom-64px here)
cd /work/main
while pgrep -f "runs/main.sh" > /dev/null; do sleep 10; done
for run in "lewm-s0 --subspaces 0 --seed 0" "k16-s1 --subspaces 16 --seed 1" "lewm-s1 --subspaces 0 --seed 1"; do
  set -- $run; name=$1; shift
  date; start=$(date +%s)
  python train.py --env twoRoom --recipe cpu "$@" --out runs/w2-$name.pt > runs/w2-$name.train.out 2>&1
  echo "$name train rc $? $(( $(date +%s) - start )) s"
  start=$(date +%s)
  python plan.py --env twoRoom --ckpt runs/w2-$name.pt --probe --prediction --json runs/w2-$name.json > runs/w2-$name.plan.out 2>&1
  echo "$name plan rc $? $(( $(date +%s) - start )) s"
done
date
