"""The two detection networks brewnet ships (brewnet/models/generic): DIGITS' DetectNet unchanged,
and our small DetectNet; each builds its deploy net (phase TEST, no stage) with DetectNet's single
output, the clustered box list."""
from __future__ import annotations

import hashlib

import numpy as np

import brewnet as caffe
from brewnet.models.generic import generic_network_path

#: sha256 of NVCaffe's examples/kitti/detectnet_network.prototxt, the file DIGITS' object-detection
#: example trains (recorded from the copy in DIGITS' example data)
DETECTNET_SHA256 = "9767c6bbc9a8258b4fb3d1d71a6606888c2f9534461d94b43de3aaae64aae45c"


def test_detectnet_is_nvcaffes_file_unchanged():
    data = generic_network_path("detectnet").read_bytes()
    assert hashlib.sha256(data).hexdigest() == DETECTNET_SHA256


def test_detectnet_deploy_net_builds_at_its_input_size():
    net = caffe.Net(str(generic_network_path("detectnet")), caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["bbox-list"]
    assert net.blobs["data"].data.shape == (1, 3, 384, 1248)
    assert net.blobs["coverage"].data.shape == (1, 1, 24, 78)   # stride 16
    assert net.blobs["bboxes"].data.shape == (1, 4, 24, 78)


def test_detectnet_small_deploy_net_gives_a_box_list():
    net = caffe.Net(str(generic_network_path("detectnet_small")), caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["bbox-list"]
    assert net.blobs["data"].data.shape == (1, 3, 128, 256)
    net.blobs["data"].data[...] = np.random.RandomState(0).rand(1, 3, 128, 256) * 255
    out = net.forward()
    assert out["bbox-list"].shape == (1, 50, 5)
    assert net.blobs["coverage"].data.shape == (1, 1, 8, 16)    # stride 16
