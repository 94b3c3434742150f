"""BatchNorm tooling: whole-model dialect conversion, lint rules, doctor.

The on-disk blob layouts are a file-format fact: :mod:`brewnet.formats.batchnorm_layouts`.

- :mod:`brewnet.batchnorm.dialect` — convert whole models BVLC <-> NVCaffe 0.17.
- :mod:`brewnet.batchnorm.lint` — the rules behind ``brewnet lint``.
- :mod:`brewnet.batchnorm.doctor` — batch vs stored statistics, recalibration.
"""
