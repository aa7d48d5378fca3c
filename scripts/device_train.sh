#!/usr/bin/env bash
# Runs ON a lent accelerator (the `device` tool), after `python scripts/device_bundle.py --data ../shared/data/lfw`
# here:   run(command="bash scripts/device_train.sh", carry=[".gpu"], timeout_s=480)
#
# Continues the zoo's anonymiser (G/E/R) and learned watermark side by side on the one GPU for
# MINUTES each ('device' configs: the shipped width 16, larger batches, the learning rate annealed
# by time) and leaves in $OUT what a measurement here needs: the weights (float32), the JSON-lines
# logs, the sample grids and each trainer's output - 8 files, the most that come back (16 MiB each).
# Nothing is registered in models/ until `refacex bench` has measured it here.
#
# Env: MINUTES (default 4), DEVICE (cuda; cpu to rehearse it here), ONLY (anon or wm: train that one
# alone), OUT (set by the tool). Rehearsed here on the CPU with a Python 3.12 venv holding only the
# device image's packages (torch, numpy, pillow, opencv-python-headless, tqdm):
#   OUT=/tmp/out DEVICE=cpu MINUTES=0.3 bash scripts/device_train.sh
set -uo pipefail
MINUTES=${MINUTES:-4}
DEVICE=${DEVICE:-cuda}
ONLY=${ONLY:-}
: "${OUT:?OUT is where the results go}"
[ -f .gpu/crops.npz ] || { echo "no .gpu/crops.npz: run scripts/device_bundle.py first and carry .gpu"; exit 2; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/refacex-site .gpu/whl/*.whl || exit 3
export PYTHONPATH="$PWD:$PWD/.gpu/site:/tmp/refacex-site" PYTHONUNBUFFERED=1
python3 - <<'EOF' || exit 4
import torch, refacex_plugin.training.anonymiser, refacex_plugin.training.watermark  # every import the trainers need
from refacex_plugin.identity import IdentityModel
IdentityModel()  # the dlib weights from .gpu/site
print("torch", torch.__version__, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
EOF

mkdir -p "$OUT/anon" "$OUT/wm"
cp models/refacex-donors.npy "$OUT/anon/donors.npy"  # keep the zoo's donor bank (the trainer reuses a run's bank)
train() {  # name, module, extra args
  python3 -m "refacex_plugin.training.$2" --data .gpu/crops.npz --config device --init zoo --device "$DEVICE" \
    --out "$OUT/$1" --minutes "$MINUTES" "${@:3}" > "$OUT/$1.log" 2>&1
}
start=$(date +%s)
ra=0; rw=0
if [ "$ONLY" != wm ]; then train anon anonymiser & a=$!; fi
if [ "$ONLY" != anon ]; then train wm watermark & w=$!; fi
if [ "$ONLY" != wm ]; then wait $a; ra=$?; fi
if [ "$ONLY" != anon ]; then wait $w; rw=$?; fi
echo "anonymiser rc=$ra, watermark rc=$rw, $(( $(date +%s) - start )) s"
for t in anon wm; do [ -f "$OUT/$t.log" ] && { echo "== $t"; tail -n 2 "$OUT/$t.log"; }; done
rm -f "$OUT"/*/checkpoint.pt "$OUT"/*/config.json "$OUT/anon/donors.npy"  # too large or already here
ls -la "$OUT" "$OUT/anon" "$OUT/wm"
[ $ra -eq 0 ] && [ $rw -eq 0 ]
