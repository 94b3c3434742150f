"""Make ``import caffe`` (and ``caffe.proto``, ``caffe.io``, ...) resolve to brewnet before
BVLC's test modules are imported."""
import brewnet

brewnet.alias_as_caffe()
