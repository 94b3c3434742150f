"""BatchNorm tooling: lint rules, doctor (dialect conversion: brewnet.convert).

The on-disk blob layouts are a file-format fact: :mod:`brewnet.formats.batchnorm_layouts`.

- :mod:`brewnet.batchnorm.lint` — the rules behind ``brewnet lint``.
- :mod:`brewnet.batchnorm.doctor` — batch vs stored statistics, recalibration.
"""
