#!/usr/bin/env bash
# Regenerate brewnet/proto/caffe_pb2.py from brewnet/proto/caffe.proto.
# Uses the protoc bundled with grpcio-tools (pinned in constraints.txt), so the output is
# deterministic for a given grpcio-tools version; tests/test_proto_generated.py checks that the
# committed file matches. The proto is compiled by its repository path (-I .) so that the
# generated classes live in module brewnet.proto.caffe_pb2 (needed for pickling, e.g. when a
# LayerParameter is sent to a data-loading worker process).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I . --python_out=. brewnet/proto/caffe.proto
python -c "from brewnet.proto import caffe_pb2"  # imports under the installed protobuf runtime
echo "regenerated brewnet/proto/caffe_pb2.py"
