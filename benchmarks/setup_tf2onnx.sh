#!/usr/bin/env bash
# Creates the virtualenv that benchmarks/onnx_vs_tf2onnx.py runs tf2onnx in (kept apart from the project's venv).
#
#   bash benchmarks/setup_tf2onnx.sh [VENV]      VENV defaults to $TF2ONNX_VENV, else /work/tf2onnx-venv
#
# tf2onnx 1.17.0 is tested upstream with TensorFlow <= 2.15, but Keras 2.15 cannot read the .h5 files tf_keras
# 2.21 writes (InputLayer's `optional` key), so the venv holds the same TensorFlow and tf_keras as the reference;
# the benchmark runs tf2onnx with TF_USE_LEGACY_KERAS=1 so its `--keras` loader is tf_keras. onnxruntime is not
# needed here: both ONNX files are timed with the project venv's onnxruntime.
set -euo pipefail

VENV="${1:-${TF2ONNX_VENV:-/work/tf2onnx-venv}}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet \
    "tensorflow==2.21.0" "tf_keras==2.21.0" "tf2onnx==1.17.0" \
    "onnx==1.23.2" "protobuf==7.36.2" "numpy==2.4.6"
TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c \
    "import tf2onnx, tf_keras; print('tf2onnx', tf2onnx.__version__, 'tf_keras', tf_keras.__version__)"
echo "tf2onnx venv ready: $VENV/bin/python"
