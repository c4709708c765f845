"""Local training and evaluation in torch: seeded, deterministic on CPU."""

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
    "EvalResult",
    "TrainConfig",
    "TrainFn",
    "TrainResult",
    "evaluate",
    "get_params",
    "param_spec",
    "predict_proba",
    "set_params",
    "train_local",
]
