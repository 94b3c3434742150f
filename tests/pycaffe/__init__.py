"""pycaffe's Python interface as a pycaffe user calls it (``import brewnet as caffe``): nets
and solvers built from prototxt files, Python layers found by module name, NetSpec, caffe.io,
coord_map and draw, and the multi-process names.

Between them these files make every call that BVLC Caffe's own ``python/caffe/test`` suite makes
(our nets, our expected values, worked out in the comments), so that the pycaffe behaviour that
suite pins stays pinned here."""
