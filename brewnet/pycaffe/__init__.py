"""pycaffe's face: BVLC's ``python/caffe/`` modules, which ``import brewnet as caffe`` and
:func:`brewnet.alias_as_caffe` map (``caffe.io`` is ``brewnet.pycaffe.io``, also importable as
``brewnet.io``; the same for every module here).

- :mod:`.io`: ``caffe.io``: blob and datum conversions, image loading and resizing, the Transformer.
- :mod:`.net_spec`: ``caffe.net_spec``: NetSpec, ``caffe.layers`` / ``caffe.params``, ``to_proto``.
- :mod:`.coord_map`: ``caffe.coord_map``: coordinate maps between NetSpec tops, ``crop``.
- :mod:`.draw`: ``caffe.draw``: pydot graphs and Graphviz pictures of a NetParameter.
- :mod:`.multiprocess`: ``caffe.NCCL``, ``set_solver_count`` / ``set_solver_rank`` (the count and
  rank themselves live in :mod:`brewnet.distributed`), ``has_nccl``, ``set_multiprocess``.
- :mod:`.classifier`, :mod:`.detector`: ``caffe.Classifier`` and ``caffe.Detector``.

pycaffe's additions to ``caffe.Net`` itself (``forward_all``, ``_blob_names``, callbacks ...) are
part of the engine's Net (:mod:`brewnet.net_pycaffe`), which every Net has.

These modules sit above the engine, ``formats``, ``data``, ``distributed``, ``solver``
and ``inference``, and may import any of them; nothing below imports this package (the one
exception: ``brewnet.layers.<Type>`` is ``caffe.layers``, NetSpec's layer functions).  Importing
the package itself imports nothing.
"""
