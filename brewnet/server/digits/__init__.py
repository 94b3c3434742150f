"""DIGITS' image-classification forms and their arithmetic (docs/digits-rest.md §3–§4).

    networks.py     the standard networks (LeNet, AlexNet, GoogLeNet, their BatchNorm variants,
                    ResNet-18/50) as DIGITS-style train_val prototxt with train/val/deploy stages
    forms.py        DIGITS' dataset and model forms: defaults, validation, server-path
                    confinement, sweeps -> DatasetSpec / ModelSpec
    solver_form.py  epochs -> iterations (Plan), the solver's values, the learning-rate curve
    model_files.py  a model job's original/train_val/deploy/solver prototxt and plan.json
"""
