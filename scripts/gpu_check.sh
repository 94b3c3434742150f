#!/usr/bin/env bash
# The GPU check (issue 20, item 8): one command for a machine lent with a GPU, < 8 minutes.
#
#   scripts/gpu_check.sh --prepare   on a CPU machine with pip and Fashion-MNIST: fills .gpu_check/
#                                    (git-ignored, 13 MB) with Fashion-MNIST LMDBs of 9,000 training
#                                    and 1,000 validation images and the wheels of lmdb and protobuf
#                                    (constraints.txt's versions) for the GPU machine's Python
#   scripts/gpu_check.sh             on the GPU machine, with .gpu_check/ carried along
#
# The run prints what it finds (Python, torch, CUDA, packages), installs nothing from the network
# (carried wheels go into a private folder on PYTHONPATH), then runs scripts/gpu_check.py: the
# CUDA tests, LeNet-BN trained on the GPU, GPU vs CPU on the golden nets, `brewnet time` against
# hand-written PyTorch.  Summary: $OUT/gpu_summary.txt (and the whole output in $OUT/gpu_check.log)
# when $OUT is set, else ./gpu_check_summary.txt.  Exit status 0 only if every step passed.
# BREWNET_GPU_CHECK_DEVICE=cpu runs every step on the CPU (to check the script without a GPU).
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
KIT=$REPO/.gpu_check
GPU_PY=${GPU_CHECK_PYTHON_VERSION:-3.12}   # the GPU machine's Python, for --prepare's wheels

die() { echo "GPU CHECK FAILED: $*" >&2; exit 2; }

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$KIT/wheels"
    if [ ! -d "$KIT/fashion/train_db" ]; then
        src=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
        if [ -d "$src" ]; then
            PYTHONPATH=$REPO $PY -m brewnet dataset create "$src" "$KIT/fashion" -max-per-class 1000 -seed 1 \
                || die "brewnet dataset create"
            rm -rf "$KIT/fashion/test_db"   # not used; keeps the carried folder small
        else
            echo "no Fashion-MNIST at $src: the GPU run will train on synthetic data"
        fi
    fi
    for pkg in lmdb protobuf; do   # the versions this repository pins
        pin=$(grep -i "^$pkg==" constraints.txt) || die "$pkg is not pinned in constraints.txt"
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PY" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$KIT/wheels" "$pin" || die "pip download $pin"
    done
    ls -l "$KIT/wheels"; du -sh "$KIT"
    exit 0
fi

# the whole output also in $OUT/gpu_check.log (the device tool returns only the tail of stdout)
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "== environment"
echo "python: $(command -v "$PY") $($PY -c 'import sys; print(sys.version.split()[0])')"
command -v nvidia-smi >/dev/null && nvidia-smi -L
$PY - <<'EOF'
import importlib
for name in ("torch", "numpy", "google.protobuf", "lmdb", "PIL", "h5py", "pytest", "onnx"):
    try:
        m = importlib.import_module(name)
        print(f"{name}: {getattr(m, '__version__', 'present')}")
    except Exception as e:  # report and go on: the checks below say what is needed
        print(f"{name}: missing ({type(e).__name__}: {e})")
try:
    import torch
    print("cuda:", torch.cuda.is_available(), torch.version.cuda,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception:
    pass
EOF
$PY -c "import torch" 2>/dev/null || die "no torch for $PY (set PYTHON=...)"

# brewnet's generated caffe_pb2 needs the protobuf runtime it was generated for, and the Data
# layer needs lmdb: take the carried wheels for what is missing or too old.
need_pb=$(sed -n 's/^# Protobuf Python Version: //p' brewnet/proto/caffe_pb2.py)
SITE=${TMPDIR:-/tmp}/brewnet-gpu-check-site
wheels=()
$PY -c "import lmdb" 2>/dev/null || wheels+=("$KIT"/wheels/lmdb-*.whl)
$PY -c "
import google.protobuf as p, sys
have = tuple(int(x) for x in p.__version__.split('.')[:3])
sys.exit(have < tuple(int(x) for x in '$need_pb'.split('.')))" 2>/dev/null || wheels+=("$KIT"/wheels/protobuf-*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    echo "installing carried wheels into $SITE: ${wheels[*]##*/}"
    for w in "${wheels[@]}"; do [ -f "$w" ] || die "needed $w: run scripts/gpu_check.sh --prepare here and carry .gpu_check"; done
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "${wheels[@]}" \
        || die "pip install of the carried wheels"
    export PYTHONPATH=$REPO:$SITE GPU_CHECK_SETUP="carried wheels installed: ${wheels[*]##*/}"
else
    export PYTHONPATH=$REPO GPU_CHECK_SETUP="no carried wheels needed"
fi
$PY -c "import brewnet.proto.caffe_pb2, brewnet.data.lmdb_io; print('brewnet', brewnet.__version__, 'from', brewnet.__file__)" \
    || die "brewnet does not import (see above)"

exec $PY scripts/gpu_check.py
