"""Caffe's protobuf schema (BVLC caffe.proto plus NVCaffe's non-clashing fields).

``caffe_pb2`` is generated from ``caffe.proto`` by ``scripts/gen_proto.sh``; do not edit it.
"""
from brewnet.proto import caffe_pb2

__all__ = ["caffe_pb2"]
