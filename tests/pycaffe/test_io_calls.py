"""caffe.io's BlobProto and Datum conversions on hand-made protos: the 4-D legacy shape fields
and BlobShape, a blob with no shape, a one-value blob, and a Datum with and without a label."""
from __future__ import annotations

import numpy as np
import pytest

import brewnet as caffe

VALUES = np.arange(60, dtype=np.float32)  # (3, 4, 5) or (1, 3, 4, 5) in C order


def _blob(**legacy) -> "caffe.proto.caffe_pb2.BlobProto":
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(VALUES.tolist())
    for field, value in legacy.items():
        setattr(blob, field, value)
    return blob


def test_legacy_num_channels_height_width():
    arr = caffe.io.blobproto_to_array(_blob(num=1, channels=3, height=4, width=5))
    assert arr.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(arr.ravel(), VALUES)  # row-major, as Caffe stores it
    assert arr[0, 2, 1, 3] == 2 * 20 + 1 * 5 + 3


def test_blob_shape_dims():
    blob = _blob()
    blob.shape.dim.extend([3, 4, 5])
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (3, 4, 5)
    assert arr[2, 1, 3] == 2 * 20 + 1 * 5 + 3


def test_a_blob_with_values_and_no_shape_is_a_value_error():
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(_blob())


def test_one_value():
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.append(123.0)
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.size == 1 and arr == 123


def test_array_to_blobproto_round_trip():
    arr = VALUES.reshape(3, 4, 5)
    back = caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(arr))
    np.testing.assert_array_equal(back, arr)


def test_datum_without_a_label_leaves_the_field_unset():
    image = np.full((3, 4, 5), 7, dtype=np.uint8)  # (C, H, W)
    labelled = caffe.io.array_to_datum(image, label=1)
    unlabelled = caffe.io.array_to_datum(image)
    assert labelled.HasField("label") and labelled.label == 1
    assert not unlabelled.HasField("label")
    # an unset field is not written: the serialised Datum is shorter
    assert len(unlabelled.SerializeToString()) < len(labelled.SerializeToString())
    for datum in (labelled, unlabelled):
        assert (datum.channels, datum.height, datum.width) == (3, 4, 5)
        np.testing.assert_array_equal(caffe.io.datum_to_array(datum), image)


def test_float_datum_keeps_its_values():
    image = np.ones((2, 3, 3)) * 0.25  # float64, as the numpy arrays scripts make
    datum = caffe.io.array_to_datum(image)
    assert len(datum.float_data) == 18 and not datum.data
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), image)
