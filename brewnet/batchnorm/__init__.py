"""BatchNorm tooling: on-disk layouts, lint rules, doctor (dialect conversion: brewnet.convert).

- :mod:`brewnet.batchnorm.layouts` — detect the BVLC and NVCaffe BatchNorm blob layouts of a
  caffemodel and map them to mean/variance (+ scale/bias).
- :mod:`brewnet.batchnorm.lint` — the rules behind ``brewnet lint``.
- :mod:`brewnet.batchnorm.doctor` — batch vs stored statistics, recalibration.
"""
