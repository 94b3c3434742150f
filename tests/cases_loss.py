"""Harness cases for brewnet/layers/loss.py (see tests/layer_harness.py)."""
from layer_harness import Case, away_from, labels, uniform

CLS = {"x": (4, 5), "label": (4,)}
SPATIAL = {"x": (2, 4, 2, 3), "label": (2, 1, 2, 3)}

CASES = {
    "SoftmaxWithLoss": [
        Case('type: "SoftmaxWithLoss"', CLS, inputs={"label": labels(5)}, no_grad=("label",), id="default"),
        Case('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 normalization: FULL }', SPATIAL,
             inputs={"label": labels(4)}, no_grad=("label",), id="spatial-ignore-full"),
        Case('type: "SoftmaxWithLoss" loss_param { normalize: false }', SPATIAL,
             inputs={"label": labels(4)}, no_grad=("label",), id="legacy-normalize"),
        Case('type: "SoftmaxWithLoss" softmax_param { axis: 2 } loss_param { normalization: NONE }',
             {"x": (2, 3, 4), "label": (2, 3)}, inputs={"label": labels(4)}, no_grad=("label",), id="axis2-none"),
        Case('type: "SoftmaxWithLoss" loss_param { ignore_label: 0 normalization: BATCH_SIZE }', SPATIAL,
             inputs={"label": labels(4)}, no_grad=("label",), id="batch_size"),
    ],
    "EuclideanLoss": [
        Case('type: "EuclideanLoss"', {"a": (3, 4), "b": (3, 4)}, id="2d"),
        Case('type: "EuclideanLoss"', {"a": (3, 2, 2), "b": (3, 4)}, id="reshaped"),
    ],
    "L1Loss": [
        Case('type: "L1Loss"', {"a": (3, 4), "b": (3, 4)}, id="2d"),
        Case('type: "L1Loss"', {"a": (2, 1, 3, 2), "b": (2, 6)}, id="reshaped"),
    ],
    "SigmoidCrossEntropyLoss": [
        Case('type: "SigmoidCrossEntropyLoss"', {"x": (3, 4), "t": (3, 4)}, inputs={"t": uniform(0, 1)},
             no_grad=("t",), id="default"),
        Case('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 1 normalization: VALID }',
             {"x": (3, 4), "t": (3, 4)}, inputs={"t": labels(3)}, no_grad=("t",), id="ignore-valid"),
        Case('type: "SigmoidCrossEntropyLoss" loss_param { normalize: true }',
             {"x": (2, 3, 2), "t": (2, 6)}, inputs={"t": uniform(0, 1)}, no_grad=("t",), id="legacy"),
    ],
    "HingeLoss": [
        Case('type: "HingeLoss"', CLS, inputs={"x": away_from((-1.0, 1.0), 0.01), "label": labels(5)},
             no_grad=("label",), id="L1"),
        Case('type: "HingeLoss" hinge_loss_param { norm: L2 }', {"x": (3, 2, 2), "label": (3,)},
             inputs={"x": away_from((-1.0, 1.0), 0.01), "label": labels(4)}, no_grad=("label",), id="L2"),
    ],
    "InfogainLoss": [
        Case('type: "InfogainLoss"', {"x": (4, 3), "label": (4,), "H": (3, 3)},
             inputs={"label": labels(3), "H": uniform(0, 1)}, no_grad=("label", "H"), id="bottom-H"),
        Case('type: "InfogainLoss" loss_param { ignore_label: 0 }', {"x": (2, 3, 2), "label": (2, 2), "H": (3, 3)},
             inputs={"label": labels(3), "H": uniform(0, 1)}, no_grad=("label", "H"), id="spatial-ignore"),
    ],
    "MultinomialLogisticLoss": [
        Case('type: "MultinomialLogisticLoss"', {"p": (4, 3, 1, 1), "label": (4,)},
             inputs={"p": uniform(0.1, 1.0), "label": labels(3)}, no_grad=("label",), id="default"),
    ],
    "ContrastiveLoss": [
        Case('type: "ContrastiveLoss" contrastive_loss_param { margin: 10 }',
             {"a": (4, 3, 1, 1), "b": (4, 3, 1, 1), "sim": (4,)}, inputs={"sim": labels(2)}, no_grad=("sim",),
             tol=1e-3, id="default"),
        Case('type: "ContrastiveLoss" contrastive_loss_param { margin: 30 legacy_version: true }',
             {"a": (4, 3, 1, 1), "b": (4, 3, 1, 1), "sim": (4, 1, 1, 1)}, inputs={"sim": labels(2)}, no_grad=("sim",),
             id="legacy"),
    ],
    "Accuracy": [
        Case('type: "Accuracy"', CLS, inputs={"label": labels(5)}, grad=False, id="default"),
        Case('type: "Accuracy" accuracy_param { top_k: 2 ignore_label: 0 }', CLS, tops=("acc", "per_class"),
             inputs={"label": labels(5)}, grad=False, id="topk-ignore-per-class"),
        Case('type: "Accuracy" accuracy_param { axis: 1 }', SPATIAL, inputs={"label": labels(4)}, grad=False,
             id="spatial"),
    ],
}
