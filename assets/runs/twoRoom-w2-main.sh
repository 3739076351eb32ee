#!/bin/bash
cd /tmp/fresh16
date
start=$(date +%s)
python train.py --env twoRoom --subspaces 16 && python plan.py --env twoRoom
echo "rc $? wall $(( $(date +%s) - start )) s"
date
