"""DIGITS' image-classification forms and their arithmetic (docs/digits-rest.md §3–§4).

Lowest first (each imports only those above it):

    specs.py        DatasetSpec / ModelSpec (what a form becomes), NetworkError, the name of a
                    job's Python layer module; imports nothing of the server
    fields.py       WTForms' reading of a form (Fields), its messages, the aug_* fields
    networks.py     the standard networks (LeNet, AlexNet, GoogLeNet, their BatchNorm variants,
                    ResNet-18/50) as DIGITS-style train_val prototxt with train/val/deploy stages
    solver_form.py  epochs -> iterations (Plan), the learning-rate fields, the solver's values,
                    the learning-rate curve
    model_files.py  a model job's original/train_val/deploy/solver prototxt and plan.json; a
                    custom network's parsing, splitting and lint
    forms.py        DIGITS' dataset and model forms: defaults, validation, server-path
                    confinement, sweeps -> DatasetSpec / ModelSpec
"""
