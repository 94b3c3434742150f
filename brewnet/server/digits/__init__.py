"""DIGITS' image-classification forms and their arithmetic (docs/digits-rest.md §3–§4).

Lowest first (each imports only those above it, and server/jobs/: the specs a form becomes,
DatasetSpec / ModelSpec, are jobs/specs.py; DIGITS' epoch rule is jobs/epochs.py):

    fields.py       WTForms' reading of a form (Fields), its messages, the aug_* fields
    networks.py     the standard networks (LeNet, AlexNet, GoogLeNet, their BatchNorm variants,
                    ResNet-18/50) as DIGITS-style train_val prototxt with train/val/deploy stages
    solver_form.py  epochs -> iterations (Plan), the learning-rate fields, the solver's values,
                    the learning-rate curve
    model_files.py  a model job's original/train_val/deploy/solver prototxt and plan.json; a
                    custom network's parsing, splitting and lint (NetworkError)
    forms.py        DIGITS' dataset and model forms: defaults, validation, server-path
                    confinement, sweeps -> DatasetSpec / ModelSpec
"""
