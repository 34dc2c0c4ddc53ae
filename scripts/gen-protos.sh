#!/usr/bin/env bash
# Regenerate graph_router/grpc/_proto/*_pb2.py and *_pb2_grpc.py (committed) from the
# .proto files beside them. Needs grpcio-tools: .venv/bin/pip install grpcio-tools
# (a generation-time tool only; the router needs grpcio and protobuf at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=graph_router/grpc/_proto
"$PY" -m grpc_tools.protoc -I "$OUT" --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  "$OUT/grpc_predict_v2.proto"
# protoc writes absolute imports (import grpc_predict_v2_pb2); the modules live in a package.
sed -i -E 's/^import (grpc_predict_v2_pb2) as/from . import \1 as/' "$OUT"/*_pb2_grpc.py
echo "regenerated: $(ls "$OUT"/*_pb2*.py* | tr '\n' ' ')"
