"""Local training and evaluation in torch: seeded, deterministic on CPU."""

from privml.train._dpsgd import DPSGDConfig, DPTrainResult, dp_train_fn, train_dp
from privml.train._ghost import clipped_grad_sum
from privml.train._loop import (
    ClientDataLike,
    EvalResult,
    TrainConfig,
    TrainFn,
    TrainResult,
    evaluate,
    get_params,
    param_spec,
    predict_proba,
    set_params,
    train_local,
)

__all__ = [
    "ClientDataLike",
    "DPSGDConfig",
    "DPTrainResult",
    "EvalResult",
    "TrainConfig",
    "TrainFn",
    "TrainResult",
    "clipped_grad_sum",
    "dp_train_fn",
    "evaluate",
    "get_params",
    "param_spec",
    "predict_proba",
    "set_params",
    "train_dp",
    "train_local",
]
