"""BatchNorm tooling: on-disk layouts, whole-model dialect conversion, lint rules, doctor.

- :mod:`brewnet.batchnorm.layouts` — detect the BVLC and NVCaffe BatchNorm blob layouts of a
  caffemodel and map them to mean/variance (+ scale/bias).
- :mod:`brewnet.batchnorm.dialect` — convert whole models BVLC <-> NVCaffe 0.17.
- :mod:`brewnet.batchnorm.lint` — the rules behind ``brewnet lint``.
- :mod:`brewnet.batchnorm.doctor` — batch vs stored statistics, recalibration.
"""
