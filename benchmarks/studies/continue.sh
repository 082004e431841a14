#!/usr/bin/env bash
# Continue the evidence studies (docs/evidence.md) where they stopped: `continue.sh 1` runs lane 1's commands in
# order, `continue.sh 2` lane 2's; run both at once on a 2-core machine (one thread each), e.g.
#   setsid nohup benchmarks/studies/continue.sh 1 > runs/lane-1.log 2>&1 &
#   setsid nohup benchmarks/studies/continue.sh 2 > runs/lane-2.log 2>&1 &
# Each command is an `lcia compare` / `lcia sweep` that keeps finished runs and resumes a stopped one, so a lane
# stopped anywhere (SIGTERM: a checkpoint is saved) continues from there; commit each study's small files as its
# runs finish (its adapters and checkpoints are ignored). benchmarks/studies/README.md says what each study is for.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
lcia() { .venv/bin/lcia "$@" --set threads=1 --quiet; }
out=benchmarks/studies
ni="--set training.steps=100 --set data.test_size=50"
diverse="grouping:threshold=diverse,similarity=embedding,lcia:threshold=diverse,similarity=embedding"

case "${1:?lane 1 or 2}" in
1)
  lcia compare configs/coin-mini.yaml --methods seq-lora,dema,grouping,lcia --seeds 0,1,2 \
    --set training.steps=100 --out $out/seeds-coin-mini
  lcia compare configs/ni-cit.yaml --methods seq-lora,dema,$diverse --seeds 0,1,2 $ni \
    --set stream=ni-cit-diverse --out $out/seeds-ni-cit-diverse
  for method in seq-lora dema lcia; do
    lcia sweep configs/ni-cit.yaml --set method.name=$method --orders original,reverse,alphabetical --seeds 0 $ni \
      --out $out/orders-ni-cit-$method
  done
  ;;
2)
  lcia compare configs/ni-cit.yaml --methods seq-lora,dema,grouping,lcia --seeds 0,1,2 $ni --out $out/seeds-ni-cit
  lcia compare configs/ni-cit.yaml --methods seq-lora,ema:beta=0.9,ema:beta=0.97,ema,ema:beta=0.995,dema,dema:multiplier=0.5,dema:multiplier=8,dema:preset=paper,dema:preset=scaled,ewc:lam=1e3,ewc,ewc:lam=1e5,grouping,lcia \
    $ni --out $out/frontier-ni-cit-r8
  ;;
*)
  echo "usage: $0 1|2" >&2
  exit 2
  ;;
esac
