"""brewnet.data.detection: KITTI label files, the label records DetectNet's transformation layer
reads (doc §2.4's layout, byte for byte), padding and resize, errors naming file and line, the
summary, the generated KITTI set and ``brewnet dataset create --kind detection``."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet import formats
from brewnet.commands.main import main
from brewnet.data import DataError
from brewnet.data.detection.synthetic import make_kitti_dataset
from brewnet.data.detection import (class_ids, class_names, create_detection_dataset, read_detection_labels,
                                    read_kitti_labels)
from brewnet.data.generic import create_generic_dataset, read_summary
from brewnet.data.image import datum_to_chw
from brewnet.data.lmdb_io import iter_records, parse_datum

# a hand-made KITTI label file: depths 50, 30, 10, 10 (a tie), -1000; a score column on one line
LABEL_A = """\
Car 0.00 0 -1.50 10.00 2.00 30.00 12.00 1.50 1.60 3.90 1.00 2.00 30.00 0.10
Pedestrian 0.50 1 0.20 3.00 4.00 8.00 18.00 1.70 0.50 0.80 -1.00 2.00 10.00 1.20

DontCare -1 -1 -10 0.00 0.00 5.00 5.00 -1 -1 -1 -1000 -1000 -1000 -10
Cyclist 0.10 2 0.30 20.00 5.00 24.00 9.00 1.80 0.60 1.70 2.00 1.50 10.00 -0.40 0.95
Tram 0 3 0 1 1 2 2 3 2.5 15 4 1 50 0
"""
LABEL_B = "".join(f"Van 0 0 0 {i} 0 {i + 4} 6 1 1 1 0 0 {i} 0\n" for i in range(6))

# the rows of LABEL_A by the layout (written out by hand): [x, y, w, h, alpha, class, 0, rotation_y,
# truncated, occluded, length, width, height, loc_x, loc_y, loc_z], sorted by depth descending,
# the tie at depth 10 in reversed file order (Cyclist, line 5, before Pedestrian, line 2)
ROWS_A = [
    [1, 1, 1, 1, 0, 13, 0, 0, 0, 3, 15, 2.5, 3, 4, 1, 50],                                # Tram
    [10, 2, 20, 10, -1.5, 1, 0, 0.1, 0, 0, 3.9, 1.6, 1.5, 1, 2, 30],                      # Car
    [20, 5, 4, 4, 0.3, 12, 0, -0.4, 0.1, 2, 1.7, 0.6, 1.8, 2, 1.5, 10],                   # Cyclist
    [3, 4, 5, 14, 0.2, 8, 0, 1.2, 0.5, 1, 0.8, 0.5, 1.7, -1, 2, 10],                      # Pedestrian
    [0, 0, 5, 5, -10, 0, 0, -10, -1, -1, -1, -1, -1, -1000, -1000, -1000],                # DontCare
]


def quiet():
    return io.StringIO()


def kitti_folders(root, labels: dict[str, str], sizes: dict[str, tuple[int, int]] | None = None,
                  colour=(200, 100, 50)):
    """images/ID.png (one colour, W×H from ``sizes``, default 30×20) and labels/ID.txt."""
    images, label_dir = root / "images", root / "labels"
    images.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for key, text in labels.items():
        w, h = (sizes or {}).get(key, (30, 20))
        Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(images / f"{key}.png")
        (label_dir / f"{key}.txt").write_text(text)
    return str(images), str(label_dir)


def records(path: str) -> dict[str, bytes]:
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in iter_records(path)}


def expected_record(rows, height: int) -> np.ndarray:
    out = np.zeros((height, 16), np.float32)
    out[0, :2] = len(rows), 16
    out[1:1 + len(rows)] = np.asarray(rows, np.float32)
    return out


def test_label_record_layout_byte_for_byte(tmp_path):
    images, labels = kitti_folders(tmp_path / "train", {"a": LABEL_A, "b": LABEL_B})
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 padding_image_width=40, padding_image_height=24, seed=4, stream=quiet())
    assert s["max_boxes"] == {"train": 6} and s["stages"]["train"]["label_shape"] == [1, 7, 16]
    found = {}
    for key, value in records(s["stages"]["train"]["labels"]).items():
        datum = parse_datum(value)
        assert (datum.channels, datum.height, datum.width, datum.label, datum.encoded) == (1, 7, 16, 0, False)
        assert len(key) == 9 and key.isdigit()
        stored = np.asarray(datum.float_data, np.float32)
        found[int(stored[0])] = stored.tobytes()
    # image a: 5 rows and one zero row (the stage's max is b's 6 objects)
    assert found[5] == expected_record(ROWS_A, 7).tobytes()
    rows_b = [[i, 0, 4, 6, 0, 2, 0, 0, 0, 0, 1, 1, 1, 0, 0, i] for i in reversed(range(6))]
    assert found[6] == expected_record(rows_b, 7).tobytes()
    np.testing.assert_array_equal(read_detection_labels(parse_datum_bytes(s, 5)), np.asarray(ROWS_A, np.float32))
    assert s["box_counts"]["train"]["van"] == 6 and s["box_counts"]["train"]["dontcare"] == 1
    assert s["box_counts"]["train"]["pedestrian"] == 1 and s["box_counts"]["train"]["tram"] == 1
    assert s["class_names"][:2] == ["dontcare", "car"] and s["class_names"][8] == "pedestrian"
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == s["class_names"]


def parse_datum_bytes(summary, n_boxes: int) -> bytes:
    """The label record whose row 0 says ``n_boxes``."""
    for value in records(summary["stages"]["train"]["labels"]).values():
        if parse_datum(value).float_data[0] == n_boxes:
            return value
    raise AssertionError(f"no record of {n_boxes} boxes")


def test_val_min_box_size_makes_small_val_objects_dontcare(tmp_path):
    images, labels = kitti_folders(tmp_path / "train", {"b": LABEL_B})
    val_images, val_labels = kitti_folders(tmp_path / "val", {"a": LABEL_A})
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 val_image_folder=val_images, val_label_folder=val_labels, val_min_box_size=5,
                                 padding_image_width=40, padding_image_height=24, seed=1, stream=quiet())
    # train and val have their own max boxes (6 and 5): R = 7 and 6
    assert s["max_boxes"] == {"train": 6, "val": 5}
    assert s["stages"]["val"]["label_shape"] == [1, 6, 16]
    (value,) = records(s["stages"]["val"]["labels"]).values()
    rows = read_detection_labels(value)
    want = np.asarray(ROWS_A, np.float32)
    want[0, 5] = want[2, 5] = 0   # Tram (1×1) and Cyclist (4×4) are below 5 px; the Pedestrian's 5 is not
    np.testing.assert_array_equal(rows, want)
    assert s["box_counts"]["val"]["dontcare"] == 3 and s["box_counts"]["val"]["pedestrian"] == 1
    assert s["box_counts"]["val"]["tram"] == 0
    # train is never filtered: the same small boxes keep their classes there
    images2, labels2 = kitti_folders(tmp_path / "train2", {"a": LABEL_A})
    s2 = create_detection_dataset(str(tmp_path / "out2"), train_image_folder=images2, train_label_folder=labels2,
                                  val_min_box_size=5, padding_image_width=40, padding_image_height=24,
                                  stream=quiet())
    (value,) = records(s2["stages"]["train"]["labels"]).values()
    np.testing.assert_array_equal(read_detection_labels(value), np.asarray(ROWS_A, np.float32))


def test_custom_classes_replace_the_table(tmp_path):
    assert class_ids(" DontCare, pedestrian ,CYCLIST") == {"dontcare": 0, "pedestrian": 1, "cyclist": 2}
    assert class_ids()["person"] == class_ids()["pedestrian"] == 8 and class_ids()["misc"] == 15
    assert class_names(class_ids()) == ["dontcare", "car", "van", "truck", "bus", "pickup", "vehicle-with-trailer",
                                        "special-vehicle", "pedestrian", "person-fa", "person?", "people",
                                        "cyclist", "tram", "person_sitting", "misc"]
    images, labels = kitti_folders(tmp_path / "train", {"a": LABEL_A})
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 custom_classes="DontCare, pedestrian ,CYCLIST", padding_image_width=40,
                                 padding_image_height=24, stream=quiet())
    (value,) = records(s["stages"]["train"]["labels"]).values()
    # Tram, Car, Cyclist, Pedestrian, DontCare: unknown names are class 0
    assert read_detection_labels(value)[:, 5].tolist() == [0, 0, 2, 1, 0]
    assert s["class_names"] == ["dontcare", "pedestrian", "cyclist"]
    assert s["box_counts"]["train"] == {"dontcare": 3, "pedestrian": 1, "cyclist": 1}
    assert (tmp_path / "out" / "labels.txt").read_text() == "dontcare\npedestrian\ncyclist\n"
    with pytest.raises(DataError, match="empty class name"):
        class_ids("dontcare,,car")
    with pytest.raises(DataError, match="car named twice"):
        class_ids("dontcare,car,Car")


def test_padding_then_resize_scales_the_boxes(tmp_path):
    # 30×20 image pasted top-left on 40×24, then squashed to 60×48: x × 1.5, y × 2
    images, labels = kitti_folders(tmp_path / "train", {"a": LABEL_A})
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 padding_image_width=40, padding_image_height=24, resize_image_width=60,
                                 resize_image_height=48, feature_encoding="none", stream=quiet())
    assert s["image_size"] == [60, 48] and s["stages"]["train"]["feature_shape"] == [3, 48, 60]
    assert s["feature_dims"] == [48, 60, 3] and s["mean_file"] is None
    (value,) = records(s["stages"]["train"]["labels"]).values()
    want = np.asarray(ROWS_A, np.float32)
    want[:, [0, 2]] *= np.float32(1.5)
    want[:, [1, 3]] *= np.float32(2)
    np.testing.assert_allclose(read_detection_labels(value), want, rtol=1e-6)
    (feature,) = records(s["stages"]["train"]["features"]).values()
    bgr = datum_to_chw(parse_datum(feature))   # (3, 48, 60), Caffe's BGR
    assert bgr.shape == (3, 48, 60)
    assert bgr[:, 10, 10].tolist() == [50, 100, 200]       # inside the image (1.5·30 = 45 wide, 2·20 = 40 high)
    assert bgr[:, 45, 58].tolist() == [0, 0, 0]            # the black padding
    assert not os.path.exists(tmp_path / "out" / "train_db" / "mean.binaryproto")


def test_padding_only_keeps_pixels_and_boxes(tmp_path):
    images, labels = kitti_folders(tmp_path / "train", {"a": LABEL_A}, colour=(10, 20, 30))
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 padding_image_width=32, padding_image_height=25, channel_conversion="L",
                                 stream=quiet())
    assert s["stages"]["train"]["feature_shape"] == [1, 25, 32] and s["image_size"] == [32, 25]
    (feature,) = records(s["stages"]["train"]["features"]).values()
    grey = datum_to_chw(parse_datum(feature))
    assert grey.shape == (1, 25, 32)
    assert (grey[0, :20, :30] == grey[0, 0, 0]).all() and grey[0, 0, 0] > 0
    assert (grey[0, 20:] == 0).all() and (grey[0, :, 30:] == 0).all()
    (value,) = records(s["stages"]["train"]["labels"]).values()
    np.testing.assert_array_equal(read_detection_labels(value), np.asarray(ROWS_A, np.float32))


def test_the_data_layer_reads_n_by_1_by_r_by_16(tmp_path):
    images, labels = kitti_folders(tmp_path / "train", {"a": LABEL_A, "b": LABEL_B, "c": ""})
    s = create_detection_dataset(str(tmp_path / "out"), train_image_folder=images, train_label_folder=labels,
                                 padding_image_width=40, padding_image_height=24, seed=2, stream=quiet())
    st = s["stages"]["train"]
    text = "".join(f'layer {{ name: "{top}" type: "Data" top: "{top}" data_param {{ source: "{path}" '
                   f'backend: LMDB batch_size: 3 }} }}\n' for top, path in (("data", st["features"]),
                                                                         ("label", st["labels"])))
    net = brewnet.Net(formats.net_from_text(text), brewnet.TEST)
    net.forward()
    data, label = net.blobs["data"].data, net.blobs["label"].data
    assert data.shape == (3, 3, 24, 40) and label.shape == (3, 1, 7, 16)
    counts = sorted(int(n) for n in label[:, 0, 0, 0])
    assert counts == [0, 5, 6] and (label[:, 0, 0, 1] == 16).all()
    a = int(np.flatnonzero(label[:, 0, 0, 0] == 5)[0])
    np.testing.assert_array_equal(label[a, 0, 1:6], np.asarray(ROWS_A, np.float32))
    assert (label[a, 0, 6] == 0).all()
    # BGR on the Data layer's side; the image at the top-left, black padding beyond 30×20
    assert data[a, :, 5, 5].tolist() == [50, 100, 200] and (data[a, :, 22, 35] == 0).all()


def test_seeded_shuffle_is_reproducible(tmp_path):
    texts = {f"{i:02d}": f"Car 0 0 0 {i} 0 {i + 3} 4 1 1 1 0 0 {i} 0\n" for i in range(12)}
    images, labels = kitti_folders(tmp_path / "train", texts)

    def build(name, seed):
        s = create_detection_dataset(str(tmp_path / name), train_image_folder=images, train_label_folder=labels,
                                     padding_image_width=30, padding_image_height=20, seed=seed, stream=quiet())
        rows = records(s["stages"]["train"]["labels"])
        return [float(read_detection_labels(rows[k])[0, 0]) for k in sorted(rows)], records(
            s["stages"]["train"]["features"])

    order_a, features_a = build("a", 7)
    order_b, features_b = build("b", 7)
    order_c, _ = build("c", 8)
    assert order_a == order_b and features_a == features_b
    assert sorted(order_a) == [float(i) for i in range(12)]
    assert order_a != sorted(order_a) and order_c != order_a
    assert read_summary(str(tmp_path / "a"))["seed"] == 7


def test_label_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "000007.txt"
    path.write_text("Car 0 0 0 1 2 3 4 1 1 1 0 0 5 0\n\nCar 0 0 0 1 2 3 4 1 1 1 0 0 5\n")
    with pytest.raises(DataError, match=rf'Invalid label format in "{path}", line 3: 14 fields'):
        read_kitti_labels(str(path))
    path.write_text("Car 0 0 0 1 2 3 4 1 1 1 0 0 5 0\nCar 0 zero 0 1 2 3 4 1 1 1 0 0 5 0\n")
    with pytest.raises(DataError, match=r"line 2: field 3 \(occluded\) 'zero' is not a number"):
        read_kitti_labels(str(path))
    path.write_text("Car 0 0 0 1 2  3 4 1 1 1 0 0 5 0\n")
    with pytest.raises(DataError, match=r"line 1: field 7 \(right\) '' is not a number \(fields are separated by "
                                        "single spaces\\)"):
        read_kitti_labels(str(path))
    path.write_text("Car 0 0 0 1 2 3 4 1 1 1 0 0 nan 0\r\n")
    with pytest.raises(DataError, match=r"line 1: field 14 \(z\) is nan"):
        read_kitti_labels(str(path))
    path.write_text("Car 0 0 0 1 2 3 4 1 1 1 0 0 5 0\r\n")
    (obj,) = read_kitti_labels(str(path))
    assert (obj.type, obj.box_width, obj.box_height, obj.z, obj.rotation_y, obj.line) == ("Car", 2, 2, 5, 0, 1)


def test_builder_errors(tmp_path):
    images, labels = kitti_folders(tmp_path / "t", {"a": LABEL_A, "b": LABEL_B}, sizes={"b": (41, 20)})
    out = str(tmp_path / "out")

    def build(**kw):
        options = dict(train_image_folder=images, train_label_folder=labels, padding_image_width=40,
                       padding_image_height=24, stream=quiet())
        options.update(kw)
        return create_detection_dataset(out, **options)

    with pytest.raises(DataError, match=r"b\.png: Source image width 41 is greater than padding width 40"):
        build()
    assert not os.path.exists(out)   # found before anything is written
    with pytest.raises(DataError, match="Source image height 20 is greater than padding height 19"):
        build(padding_image_width=50, padding_image_height=19)
    with pytest.raises(DataError, match="-padding-width and -padding-height go together"):
        build(padding_image_height=None)
    with pytest.raises(DataError, match="-resize-width and -resize-height go together"):
        build(resize_image_width=20)
    with pytest.raises(DataError, match="-val-image-folder needs -val-label-folder"):
        build(val_image_folder=images)
    with pytest.raises(DataError, match="-val-min-box-size -1"):
        build(val_min_box_size=-1)
    with pytest.raises(DataError, match="-channel-conversion 'BGR'"):
        build(channel_conversion="BGR")
    os.unlink(os.path.join(labels, "b.txt"))
    with pytest.raises(DataError, match=r"Label key b not found in label folder"):
        build()
    os.unlink(os.path.join(labels, "a.txt"))
    with pytest.raises(DataError, match=r"error: no label files found in"):
        build()
    bad = tmp_path / "bad"
    bad_images, bad_labels = kitti_folders(bad, {"x": "Car 0 0 0 1 2 3\n"})
    with pytest.raises(DataError, match=r'Invalid label format in ".*x\.txt", line 1'):
        build(train_image_folder=bad_images, train_label_folder=bad_labels)


def test_generic_dispatch_and_summary(tmp_path):
    images, labels = kitti_folders(tmp_path / "t", {"a": LABEL_A})
    s = create_generic_dataset("detection", str(tmp_path / "out"), train_image_folder=images,
                               train_label_folder=labels, padding_image_width=40, padding_image_height=24,
                               seed=3, stream=quiet())
    back = read_summary(str(tmp_path / "out"))
    assert back["kind"] == s["kind"] == "detection"
    assert back["stages"]["train"]["entries"] == 1 and "val" not in back["stages"]
    assert back["feature_encoding"] == "png" and back["label_encoding"] == "none"
    assert back["force_same_shape"] is True and back["mean_file"] is None
    assert back["options"]["padding_image_width"] == 40 and back["options"]["custom_classes"] == ""
    assert back["options"]["val_min_box_size"] == 25
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert "image size (WxH): 40x24" in text and "tram" in text and "van" not in text
    with pytest.raises(DataError, match="--kind detection"):
        create_generic_dataset("detection", str(tmp_path / "o2"), image_dir=images)


# ----- the generated KITTI set and the CLI ------------------------------------------------------

def test_synthetic_kitti_set_has_classes_sizes_depths_and_dontcare(tmp_path):
    d = make_kitti_dataset(str(tmp_path / "kitti"), train_count=40, val_count=6, seed=3)
    assert sorted(os.listdir(d["train_images"]))[:2] == ["000000.png", "000001.png"]
    assert len(os.listdir(d["train_images"])) == len(os.listdir(d["train_labels"])) == 40
    assert len(os.listdir(d["val_labels"])) == 6
    objects = [o for n in sorted(os.listdir(d["train_labels"]))
               for o in read_kitti_labels(os.path.join(d["train_labels"], n))]
    types = {o.type for o in objects}
    assert types == {"Car", "Pedestrian", "Cyclist", "DontCare"}
    for line in (tmp_path / "kitti" / "train" / "labels" / "000000.txt").read_text().splitlines():
        assert len(line.split(" ")) == 15
    real = [o for o in objects if o.type != "DontCare"]
    heights = np.array([o.box_height for o in real])
    widths = np.array([o.box_width for o in real])
    assert heights.min() >= 12 and heights.max() <= 64 and widths.min() >= 12 - 1e-6
    assert heights.max() - heights.min() > 30           # varied sizes
    assert len({o.z for o in real}) > len(real) // 2     # varied depths, nearer for taller boxes
    cars = sorted((o.box_height, o.z) for o in real if o.type == "Car")
    assert cars[0][1] > cars[-1][1]
    assert all(0 <= o.left and o.right <= 256 and 0 <= o.top and o.bottom <= 128 for o in objects)
    # a class's look: cars are wider than tall, pedestrians taller than wide
    assert all(o.box_width > o.box_height for o in real if o.type == "Car")
    assert all(o.box_width < o.box_height for o in real if o.type == "Pedestrian")
    # objects stand out of a textured, noisy background
    with Image.open(os.path.join(d["train_images"], "000000.png")) as im:
        rgb = np.asarray(im)
    assert rgb.shape == (128, 256, 3)
    car = next(o for o in read_kitti_labels(os.path.join(d["train_labels"], "000000.txt")) if o.type == "Car")
    outside = np.ones(rgb.shape[:2], bool)
    outside[int(car.top):int(np.ceil(car.bottom)), int(car.left):int(np.ceil(car.right))] = False
    assert rgb[outside].std() > 8
    # deterministic in the seed
    again = make_kitti_dataset(str(tmp_path / "again"), train_count=40, val_count=6, seed=3)
    assert (tmp_path / "again" / "train" / "labels" / "000007.txt").read_text() == \
        (tmp_path / "kitti" / "train" / "labels" / "000007.txt").read_text()
    assert again["val_images"].endswith(os.path.join("val", "images"))
    with pytest.raises(DataError, match="classes"):
        make_kitti_dataset(str(tmp_path / "x"), classes=("tram",))


def test_cli_builds_a_detection_dataset(tmp_path, capsys):
    d = make_kitti_dataset(str(tmp_path / "kitti"), train_count=12, val_count=4, width=128, height=64, seed=1)
    out = tmp_path / "ds"
    assert main(["dataset", "create", "--kind", "detection", d["train_images"], d["train_labels"], str(out),
                 "-val-image-folder", d["val_images"], "--val-label-folder", d["val_labels"],
                 "-padding-width", "160", "-padding-height", "80", "-resize-width", "128", "-resize-height", "64",
                 "-val-min-box-size", "16", "-custom-classes", "dontcare,car,pedestrian,cyclist", "-seed", "5",
                 "-feature-encoding", "jpg"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}: train_db (12), val_db (4)" in captured.out
    assert "Found 12 entries for stage train" in captured.err and "train_db: 12/12" in captured.err
    s = read_summary(str(out))
    assert s["kind"] == "detection" and s["image_size"] == [128, 64] and s["seed"] == 5
    assert s["class_names"] == ["dontcare", "car", "pedestrian", "cyclist"]
    assert s["feature_encoding"] == "jpg" and s["stages"]["val"]["feature_shape"] == [3, 64, 128]
    assert s["options"]["padding_image_width"] == 160 and s["options"]["val_min_box_size"] == 16
    counted = {}
    for n in os.listdir(d["train_labels"]):
        for o in read_kitti_labels(os.path.join(d["train_labels"], n)):
            name = o.type.lower()
            counted[name] = counted.get(name, 0) + 1
    assert s["box_counts"]["train"] == {k: counted.get(k, 0) for k in s["class_names"]}
    assert sum(s["box_counts"]["val"].values()) == sum(
        len(read_kitti_labels(os.path.join(d["val_labels"], n))) for n in os.listdir(d["val_labels"]))
    # boxes scaled by 128/160 and 64/80 = 0.8
    objects = {round(o.left * 0.8, 3): o for n in os.listdir(d["train_labels"])
               for o in read_kitti_labels(os.path.join(d["train_labels"], n))}
    for value in records(s["stages"]["train"]["labels"]).values():
        for row in read_detection_labels(value):
            o = objects[round(float(row[0]), 3)]
            np.testing.assert_allclose(row[1:4], [o.top * 0.8, o.box_width * 0.8, o.box_height * 0.8], rtol=1e-5)
    assert main(["dataset", "create", "--kind", "detection", d["train_images"], d["train_labels"], str(out),
                 "-resize-width", "64", "-resize-height", "32", "--overwrite", "-padding-width", "128",
                 "-padding-height", "64"]) == 0
    assert read_summary(str(out))["image_size"] == [64, 32]
    capsys.readouterr()
    assert main(["dataset", "create", "--kind", "detection", d["train_images"], str(out)]) == 1
    assert "--kind detection takes TRAIN_IMAGE_FOLDER TRAIN_LABEL_FOLDER OUTDIR" in capsys.readouterr().err
    assert main(["dataset", "create", "--kind", "detection", d["train_images"], d["train_labels"],
                 str(tmp_path / "d2"), "-label-encoding", "png"]) == 1
    assert "-label-encoding is not an option of --kind detection" in capsys.readouterr().err
    assert main(["dataset", "create", "--kind", "segmentation", d["train_images"], d["train_labels"],
                 str(tmp_path / "d3"), "-custom-classes", "a,b"]) == 1
    assert "-custom-classes is not an option of --kind segmentation" in capsys.readouterr().err
    assert main(["dataset", "create", "--kind", "detection", d["train_images"], d["train_labels"],
                 str(tmp_path / "d4"), "-padding-width", "100", "-padding-height", "50"]) == 1
    assert "Source image width 128 is greater than padding width 100" in capsys.readouterr().err
