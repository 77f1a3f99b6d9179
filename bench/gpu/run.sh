#!/usr/bin/env bash
# The GPU check of tandem's cloud half, run on a lent GPU machine (x86_64, NVIDIA, Python
# with PyTorch, no Rust, no network) from the kit `cargo xtask gpu-kit` packs into .gpu/
# and .gl/ (README "GPU"). Prints, and writes under $OUT:
#  1. one split step: tandem-cloud on the GPU (vulkan) and on 2 CPU cores (flex), a
#     40-step device against each, and PyTorch eager of the same shapes on both;
#  2. the cloud at scale on the GPU: `tandem load` with N devices against
#     `--top per-device` and `--top shared` (batched), N = 1, 8, 32.
# The weights are random with the real model's names and shapes (made here from the
# header): fine for speed, not for accuracy.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
G=$(pwd)/.gpu; T=/tmp/tandem-gpu; rm -rf $T; mkdir -p $T/cache/minilm $T/cache/data
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export TANDEM_CACHE=$T/cache
cp $G/tokenizer.json $G/vocab.txt $G/config.json $T/cache/minilm/
cp $G/rotten_tomatoes_corpus_full.csv.bz2 $T/cache/data/
python3 $G/make_weights.py $G/header.json $T/cache/minilm/model.safetensors
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for x in tandem tandem-cloud; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" $G/$x.xz $T/$x
  chmod +x $T/$x
done
B=$T
$B/tandem-cloud ca init >/dev/null && $B/tandem-cloud ca issue --node dev1 >/dev/null || echo "pki failed"
for i in $(seq 0 31); do $B/tandem-cloud ca issue --node load-$i >/dev/null; done

# Starts tandem-cloud on cores $2 with flags $3..; sets $cpid and $addr.
start_cloud() {
  local label=$1 cpus=$2; shift 2
  taskset -c "$cpus" $B/tandem-cloud serve --listen 127.0.0.1:0 "$@" > $OUT/cloud-$label.log 2>&1 &
  cpid=$!
  for _ in $(seq 1 120); do grep -q 'listening on' $OUT/cloud-$label.log && break; sleep 0.5; done
  addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' $OUT/cloud-$label.log | head -1)
}
stop_cloud() { kill -TERM $cpid; wait $cpid; tail -1 $OUT/cloud-$1.log; }

split_pair() { # $1 label, $2 cloud cpus, $3 timeout s, $4.. cloud flags
  local label=$1 cpus=$2 limit=$3; shift 3
  local t0=$(date +%s)
  start_cloud $label "$cpus" --warmup 4 --decay-steps 36 "$@"
  timeout $limit taskset -c 0,1 $B/tandem split --cloud "$addr" --node dev1 --cut 2 --mode train-bottom \
     --codec identity --steps 40 --warmup 4 --eval-every 1000 --dev-limit 16 --test-limit 32 \
     --metrics $OUT/metrics-$label.json --plot $T/p.png > $OUT/device-$label.log 2>&1
  echo "[$label] device rc=$? after $(( $(date +%s)-t0 )) s"
  stop_cloud $label; tail -3 $OUT/device-$label.log
}
echo "=== 1. one split step"
split_pair vulkan 2-9 200 --backend vulkan
split_pair flex2 2,3 130 --backend flex
timeout 90 python3 $G/torch_split.py cuda 0 48
timeout 120 taskset -c 2,3 python3 $G/torch_split.py cpu 2 48
python3 - <<'PY'
import json,glob,os,statistics as st
for f in sorted(glob.glob(os.environ["OUT"]+"/metrics-*.json")):
    j=json.load(open(f)); s=j["steps"][5:]
    m=lambda k: st.median([x[k] for x in s if x.get(k) is not None]) if s else float('nan')
    print(os.path.basename(f), "steps",len(j["steps"]), "compute_ms %.1f backward_ms %.1f round_trip_ms %.1f tokens %.0f" % (m("compute_ms"),m("backward_ms"),m("round_trip_ms"),m("tokens")), "peak_rss_mib %.0f" % (j.get("peak_rss_kib",0)/1024))
PY

echo "=== 2. the cloud at scale on the GPU (tandem load, 16 reviews a step)"
for top in per-device shared; do
  for n in 1 8 32; do
    [ $top = per-device ] && [ $n = 32 ] && continue
    label=load-$top-$n
    start_cloud $label 2-9 --backend vulkan --top $top --split-state $T/state-$label
    # The first steps compile shaders: a short warm-up run, then the measured one.
    timeout 120 taskset -c 10-15 $B/tandem load --cloud "$addr" --node load --devices 1 --steps 3 > /dev/null 2>&1
    timeout 240 taskset -c 10-15 $B/tandem load --cloud "$addr" --node load --devices $n --steps 6 \
       > $OUT/$label.log 2>&1
    echo "[$label] rc=$? $(grep '^load:' $OUT/$label.log)"
    stop_cloud $label
  done
done
python3 - <<'PY'
import glob,os,re
rate={}
for f in glob.glob(os.environ["OUT"]+"/load-*.log"):
    m=re.search(r"steps_per_s ([0-9.]+)", open(f).read())
    if m: rate[os.path.basename(f)[5:-4]]=float(m.group(1))
print(rate)
a,b=rate.get("shared-32"),rate.get("shared-1")
if a and b: print("gpu_shared_n32_speedup: %.2f" % (a/b))
PY
