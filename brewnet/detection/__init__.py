"""Object detection the DIGITS/DetectNet way, as plain numpy arithmetic on boxes: the coverage and
bounding-box targets DetectNet learns (``coverage``), its training augmentations (``augment``),
box clustering of a net's coverage map (``clustering``), and scoring: DetectNet's own
precision × recall "mAP" and a true average precision (``scoring``); ``boxes`` holds the box
helpers they share.  The layers that run them inside a net are in :mod:`brewnet.layers.detectnet`.
"""
