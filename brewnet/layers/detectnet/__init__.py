"""DetectNet's layers: NVCaffe's ``DetectNetTransformation`` (``transform``), and the Python
layers DIGITS' DetectNet prototxt names, importable under those names
(``caffe.layers.detectnet.clustering``: ClusterDetections, ClusterGroundtruth;
``caffe.layers.detectnet.mean_ap``: ScoreDetections, mAP).  Their arithmetic is in
:mod:`brewnet.detection`.
"""
