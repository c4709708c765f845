"""``privml client``: a federated client process talking to the coordinator over mutual TLS."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from privml._exceptions import ConfigError
from privml.cli._app import app, err, guarded, out


@app.command("client")
@guarded
def client_cmd(
    server: Annotated[str, typer.Option(help="Coordinator URL, e.g. https://127.0.0.1:8443.")],
    ca: Annotated[Path, typer.Option(help="The federation's CA certificate (ca.pem).")],
    cert: Annotated[Path, typer.Option(help="This client's certificate.")],
    key: Annotated[Path, typer.Option(help="This client's private key.")],
    dataset: Annotated[str, typer.Option(help="Local dataset: digits, fashion-mnist, csv.")]
    = "digits",
    data_path: Annotated[str | None, typer.Option(help="Dataset file or folder.")] = None,
    partition: Annotated[int | None, typer.Option(help="Hold only this Dirichlet partition "
                                                  "of the dataset (0-based).")] = None,
    of: Annotated[int, typer.Option(help="Number of partitions.")] = 1,
    alpha: Annotated[float, typer.Option(help="Dirichlet alpha of the partition.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Partition seed (same for every client).")] = 0,
    holdout: Annotated[float, typer.Option(help="Share of the local data kept out of "
                                           "training, for evaluation rounds.")] = 0.2,
    verbose: Annotated[bool, typer.Option(help="Log each request.")] = False,
    threads: Annotated[int, typer.Option(help="Torch threads (small models train fastest "
                                         "on one; many clients share few cores).")] = 1,
    store: Annotated[Path | None, typer.Option(
        help="Sealed store for this client's partition and model copy (default: NAME.store "
        "beside --key NAME.key).", show_default=False)] = None,
    store_key_file: Annotated[Path | None, typer.Option(
        help="The store's key file (default: PRIVML_STORE_KEY, else NAME.store.key made "
        "beside --key, as well protected as the TLS key).", show_default=False)] = None,
    sealed: Annotated[bool, typer.Option(
        help="Keep the partition and the model sealed at rest (--no-sealed: memory only).")]
    = True,
    retry_for: Annotated[float, typer.Option(
        help="Keep retrying an unreachable coordinator (or its 5xx) for this many seconds "
        "of backoff before giving up: a restart takes seconds. 0: give up at once.")]
    = 120.0,
) -> None:
    """Enrol, then train locally whenever the coordinator asks, until the run ends."""
    import numpy as np
    import torch

    from privml.data import ClientData, load_dataset
    from privml.data import partition as split
    from privml.transport.client import FederatedClient

    if not server.startswith("https://"):
        raise ConfigError("the server URL must start with https:// (plaintext is refused)")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if not math.isfinite(retry_for) or retry_for < 0:
        raise ConfigError(f"retry_for must be a number of seconds >= 0, got {retry_for}")
    torch.set_num_threads(threads)
    ds = load_dataset(dataset, seed=seed, path=data_path)
    if partition is None:
        data = ClientData(ds.x_train, ds.y_train, np.arange(len(ds.y_train), dtype=np.int64))
    else:
        if not 0 <= partition < of:
            raise ConfigError(f"partition must be in [0, {of}), got {partition}")
        seeds = np.random.SeedSequence(seed).spawn(1)
        parts = split(ds.y_train, of, alpha=alpha, rng=np.random.default_rng(seeds[0]))
        data = parts.clients(ds.x_train, ds.y_train)[partition]
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    # A seeded split of this client's own rows: evaluation data never trains.
    order = np.random.default_rng(seed).permutation(data.indices)
    n_eval = round(holdout * len(order))
    evaluation = ClientData(data.x, data.y, np.sort(order[:n_eval]))
    data = ClientData(data.x, data.y, np.sort(order[n_eval:]))
    local = None
    if sealed:
        local = _sealed_store(store or key.with_name(f"{key.stem}.store"), store_key_file,
                              key.with_name(f"{key.stem}.store.key"))
        data, evaluation = _seal_partition(local, data, evaluation)
    try:
        with FederatedClient(server, ca=ca, cert=cert, key=key, data=data,
                             eval_data=evaluation, retry_for=retry_for,
                             max_retries=8 if retry_for else 0) as client:
            client.model_store = local
            report = client.run()
    finally:
        if local is not None:
            local.close()
    out.print(f"{report.client_id}: trained {len(report.rounds_trained)} rounds, evaluated "
              f"{len(report.rounds_evaluated)}, {report.retries} retries, "
              f"{len(report.refused)} refused")
    if report.refused:
        err.print(f"refused: {', '.join(report.refused)}")


def _sealed_store(path: Path, key_file: Path | None, default_key: Path) -> Any:
    """The client's store. Key: ``key_file``, else PRIVML_STORE_KEY, else ``default_key``
    beside the client's TLS key (made on first use, mode 0600): like the TLS key, it stops
    someone who copies the store alone, not a thief with the whole disk (use a passphrase
    store or the OS keyring for that)."""
    import os
    import secrets

    from privml.store import ENV_KEY, LocalStore, key_from_file

    if key_file is None and not os.environ.get(ENV_KEY):
        key_file = default_key
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
    return LocalStore(path, key=None if key_file is None else key_from_file(key_file))


def _seal_partition(local: Any, data: Any, evaluation: Any) -> tuple[Any, Any]:
    """Seal this client's rows (training and held-out) and train from what opens back."""
    import numpy as np

    from privml.data import ClientData
    from privml.store._url import decode_value, encode_value

    out = []
    for label, part in (("train", data), ("eval", evaluation)):
        x, y = part.take(slice(None))
        for field, arr in (("x", x), ("y", y)):
            local.put(f"partition/{label}/{field}", encode_value(np.ascontiguousarray(arr)))
            local.prune(f"partition/{label}/{field}", keep=1)
        xs = decode_value(local.get(f"partition/{label}/x"))
        ys = decode_value(local.get(f"partition/{label}/y"))
        out.append(ClientData(xs, ys, np.arange(len(ys), dtype=np.int64)))
    return out[0], out[1]
