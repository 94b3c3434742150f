"""Harness cases for the data readers: Data, ImageData, HDF5Data, MemoryData (fixtures in a temp dir)."""
from data_fixtures import fixtures
from layer_harness import Case

F = fixtures()

CASES = {
    "Data": [
        Case(layer=f'type: "Data" data_param {{ source: "{F["lmdb_raw"]}" backend: LMDB batch_size: 4 }} '
                   f'transform_param {{ scale: 0.5 crop_size: 4 mean_file: "{F["mean"]}" }}',
             bottoms={}, tops=("data", "label"), grad=False, id="raw-test-crop-meanfile"),
        Case(layer=f'type: "Data" data_param {{ source: "{F["lmdb_raw"]}" backend: LMDB batch_size: 3 }} '
                   'transform_param { crop_size: 5 mirror: true mean_value: 128 }',
             bottoms={}, tops=("data", "label"), phase="TRAIN", grad=False, deterministic=False,
             id="raw-train-random-crop-mirror"),
        Case(layer=f'type: "Data" data_param {{ source: "{F["lmdb_png"]}" backend: LMDB batch_size: 2 }} '
                   'transform_param { force_gray: true }',
             bottoms={}, tops=("data",), grad=False, id="encoded-png-gray-no-label"),
    ],
    "ImageData": [
        Case(layer=f'type: "ImageData" image_data_param {{ source: "{F["list"]}" root_folder: "{F["imdir"]}/" '
                   'batch_size: 2 new_height: 6 new_width: 5 }',
             bottoms={}, tops=("data", "label"), grad=False, id="resize"),
        Case(layer=f'type: "ImageData" image_data_param {{ source: "{F["list"]}" root_folder: "{F["imdir"]}/" '
                   'batch_size: 3 shuffle: true is_color: false } transform_param { crop_size: 4 mirror: true }',
             bottoms={}, tops=("data", "label"), phase="TRAIN", grad=False, deterministic=False,
             id="gray-shuffle-train"),
    ],
    "HDF5Data": [
        Case(layer=f'type: "HDF5Data" hdf5_data_param {{ source: "{F["h5list"]}" batch_size: 3 }}',
             bottoms={}, tops=("data", "label"), grad=False),
    ],
    "MemoryData": [
        Case(layer='type: "MemoryData" memory_data_param { batch_size: 2 channels: 3 height: 4 width: 5 }',
             bottoms={}, tops=("data", "label"), grad=False),
    ],
}
