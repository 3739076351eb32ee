#!/bin/bash
# The cube (data version 2), training seed 2: the CPU recipe's Sub-JEPA (K=8) and LeWM (--subspaces 0), one after
# the other, each alone at 2 threads on the 2-core AMD EPYC (AVX2, fp32); data/cube-64px collected by this code first
cd /work/main
date; start=$(date +%s)
[ -d data/cube-64px ] || python subjepa.py --collect cube --workers 2 > runs/cube-collect.out 2>&1
echo "collect rc $? $(( $(date +%s) - start )) s"
for run in "k8-s2 --seed 2" "lewm-s2 --subspaces 0 --seed 2"; do
  set -- $run; name=$1; shift
  date; start=$(date +%s)
  python train.py --env cube --recipe cpu "$@" --out runs/cube-v2-$name.pt > runs/cube-v2-$name.train.out 2>&1
  echo "$name train rc $? $(( $(date +%s) - start )) s"
  start=$(date +%s)
  python plan.py --env cube --ckpt runs/cube-v2-$name.pt --probe --prediction --json runs/cube-v2-$name.json > runs/cube-v2-$name.plan.out 2>&1
  echo "$name plan rc $? $(( $(date +%s) - start )) s"
done
date
