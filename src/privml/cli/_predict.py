"""``privml predict``: local inference with a saved model on a CSV of features."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from privml._exceptions import DataError
from privml.cli._app import app, guarded, out


@app.command("predict")
@guarded
def predict_cmd(
    model: Annotated[Path, typer.Option(help="Model file written by `privml sim --save-model`.")],
    input_csv: Annotated[Path, typer.Option("--input", help="CSV with a header row; one column "
                                            "per input feature (e.g. 64 for 8x8 digits).")],
    output: Annotated[Path | None, typer.Option(help="Write predictions as CSV here.")] = None,
    label: Annotated[str | None, typer.Option(help="Label column to ignore and score "
                                              "against, if present.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to print when no --output is given.")] = 20,
) -> None:
    """Run the model locally on every row of a CSV; nothing leaves this machine."""
    from privml.data import read_feature_csv
    from privml.models import build_torch, load_model
    from privml.train import predict_proba, set_params

    spec, params = load_model(model)
    _, x, y = read_feature_csv(input_csv, label=label)
    n_in = math.prod(spec.input_shape)
    if x.shape[1] != n_in:
        raise DataError(f"{input_csv}: {x.shape[1]} feature columns, the model takes {n_in} "
                        f"(input shape {spec.input_shape})")
    net = build_torch(spec)
    set_params(net, params)
    proba = predict_proba(net, x.reshape((len(x), *spec.input_shape)))
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "prediction", "confidence",
                        *[f"p{k}" for k in range(proba.shape[1])]])
            for i in range(len(pred)):
                w.writerow([i, int(pred[i]), f"{conf[i]:.6f}",
                            *[f"{p:.6f}" for p in proba[i]]])
        tmp.replace(output)
        out.print(f"wrote {len(pred)} predictions to {output}")
    else:
        table = Table(title=f"predictions ({min(limit, len(pred))} of {len(pred)} rows)")
        for col in ("row", "prediction", "confidence"):
            table.add_column(col, justify="right")
        for i in range(min(limit, len(pred))):
            table.add_row(str(i), str(int(pred[i])), f"{conf[i]:.3f}")
        out.print(table)
    if y is not None:
        correct = int(np.sum(pred == y))
        out.print(f"accuracy against column {label!r}: {correct / len(y):.4f} "
                  f"({correct}/{len(y)} correct)")
