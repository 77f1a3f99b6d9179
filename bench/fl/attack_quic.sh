#!/bin/bash
# Issue 30 item 2's attack over QUIC, by hand (BENCHMARKS.md, "Join inflation"): 10 tandem fl
# devices (one hostile in the attacked arm) on a serve --app fl cloud with the default
# median caps, FedAvg, 20 rounds, with and without --clip 2. Needs release binaries
# (cargo build --release -p tandem-runtime -p tandem-cloud --bins) and the set-up's data.
# Writes under $OUT (default /tmp/qa); binaries from $TANDEM_BIN_DIR or the target dir.
set -u
B=${TANDEM_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
OUT=${OUT:-/tmp/qa}
for i in $(seq 0 9); do $B/tandem-cloud ca issue --node qa-$i >/dev/null; done
for clip in none 2; do
for arm in calm attacked; do
  S=$OUT/$arm-$clip; rm -rf $S; mkdir -p $S
  CLIP=(); [ $clip != none ] && CLIP=(--clip $clip)
  $B/tandem-cloud serve --app fl --listen 127.0.0.1:0 --rounds 20 --clients-per-round 10 \
     --min-updates 10 --local-lr 0.05 --batch 32 --strategy fedavg --deadline-secs 900 \
     "${CLIP[@]}" --state $S/state > $S/cloud.out 2> $S/cloud.log &
  CLOUD=$!
  for t in $(seq 1 100); do grep -q "listening on" $S/cloud.out && break; sleep 0.2; done
  A=$(grep -o "127.0.0.1:[0-9]*" $S/cloud.out | head -1)
  for i in $(seq 0 9); do
    HOST=(); if [ $arm = attacked ] && [ $i = 9 ]; then HOST=(--byzantine sign-flip:10 --byzantine-examples 16777216); fi
    $B/tandem fl --cloud $A --node qa-$i --client $i/10 --partition iid --checkpoint $S/c$i "${HOST[@]}" > $S/d$i.out 2> $S/d$i.log &
  done
  wait $CLOUD; echo "cloud rc=$?" >> $S/cloud.out
  wait
  echo "$arm clip=$clip: $(grep 'rounds done' $S/cloud.out)"
done; done
