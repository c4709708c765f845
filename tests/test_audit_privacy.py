"""``privml audit privacy`` end to end on digits: a deliberately overfit non-private run and
a DP run of the same model, both trained with canaries through ``privml sim``; the first
leaks (attack AUC above 0.5, a positive empirical epsilon), the second stays below its
accountant's epsilon. Also the canary record and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from privml._exceptions import ConfigError
from privml.audit import Severity, audit_privacy
from privml.audit._canaries import CanarySet, with_canaries
from privml.cli import app
from privml.data import load_digits
from privml.sim import RunStore

COMMON = ["sim", "--dataset", "digits", "--model", "mlp", "--alpha", "iid", "--lr", "0.1",
          "--audit-canaries", "200", "--threads", "1"]


def _sim(tmp_path: Path, name: str, *extra: str) -> int:
    db = tmp_path / "runs.db"
    done = CliRunner().invoke(app, [*COMMON, *extra, "--db", str(db), "--save-model",
                                    str(tmp_path / f"{name}.safetensors"),
                                    "--json", str(tmp_path / f"{name}.json")])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / f"{name}.json").read_text())
    assert "audit_canaries" not in json.dumps(summary)  # the secret stays in the run db
    return int(summary["run_id"])


class _SeededSecrets:
    """Canary draws from a fixed seed, so the run (and its figures) repeat: for this test
    only — real canaries come from the OS CSPRNG, unknown to the training run."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def randbits(self, k: int) -> int:
        return int(self.rng.integers(0, 2**62)) % (1 << k)

    def token_bytes(self, n: int) -> bytes:
        return self.rng.bytes(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    from privml.audit import _canaries
    from privml.dp import _fedavg, insecure_rng

    tmp = tmp_path_factory.mktemp("audit-privacy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_canaries, "secrets", _SeededSecrets(7))
        mp.setattr(_fedavg, "secure_rng", lambda: insecure_rng(11))  # the DP noise too
        overfit = _sim(tmp, "overfit", "--clients", "2", "--per-round", "2", "--rounds",
                       "3", "--epochs", "30")
        private = _sim(tmp, "private", "--clients", "20", "--per-round", "10", "--rounds",
                       "3", "--epochs", "10", "--target-epsilon", "2")
    return tmp, overfit, private


def _metrics(report: Any) -> dict[str, Any]:
    return dict(report.metrics)


def test_an_overfit_non_private_model_leaks(runs: tuple[Path, int, int]) -> None:
    tmp, overfit, _ = runs
    report = audit_privacy(overfit, db=tmp / "runs.db")
    m = _metrics(report)
    ids = {f.id for f in report.findings}
    assert {"PMA-PRIV-001", "PMA-PRIV-003"} <= ids  # no DP at all; membership leaks
    assert m["canary_attack_auc_ci"][0] > 0.9, m  # the canaries were memorised
    assert m["attack_auc"] > 0.5, m  # on natural digits the loss attack barely separates
    assert m["epsilon_lower_bound"] > 1.0, m
    assert m["epsilon_lower_bound"] <= m["epsilon_lower_bound_max"]
    print(f"overfit: AUC {m['attack_auc']:.3f} {m['attack_auc_ci']}, canaries AUC "
          f"{m['canary_attack_auc']:.3f} {m['canary_attack_auc_ci']}, TPR@1% "
          f"{m['canary_tpr_at_1pct_fpr']:.3f}, eps >= "
          f"{m['epsilon_lower_bound']:.3f} (max {m['epsilon_lower_bound_max']:.3f})")


def test_a_dp_model_stays_below_its_accountant(runs: tuple[Path, int, int]) -> None:
    tmp, _, private = runs
    report = audit_privacy(private, db=tmp / "runs.db")
    m = _metrics(report)
    assert not report.failing(Severity.HIGH), report.to_dict()
    assert m["dp_unit"] == "client" and 0 < m["epsilon_accountant"] <= 2.0 + 1e-9
    assert abs(m["attack_auc"] - 0.5) < 0.08, m
    assert abs(m["canary_attack_auc"] - 0.5) < 0.12, m  # 200 canaries: wider
    assert m["epsilon_lower_bound"] <= m["epsilon_accountant"], m  # never above: a bug
    print(f"dp: AUC {m['attack_auc']:.3f}, canaries AUC {m['canary_attack_auc']:.3f}, "
          f"eps >= {m['epsilon_lower_bound']:.3f} <= "
          f"{m['epsilon_accountant']:.3f}")
    from privml.audit._output import to_html

    page = to_html(report)
    assert page.count("data:image/png;base64,") == 2  # the ROC and the epsilon plot
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_cli_reports_and_exit_code(runs: tuple[Path, int, int]) -> None:
    tmp, overfit, private = runs
    runner = CliRunner()
    done = runner.invoke(app, ["audit", "privacy", "--run", str(overfit), "--db",
                               str(tmp / "runs.db"), "--sarif", str(tmp / "o.sarif")])
    assert done.exit_code == 1 and "PMA-PRIV-001" in done.output
    assert json.loads((tmp / "o.sarif").read_text())["runs"][0]["results"]
    done = runner.invoke(app, ["audit", "privacy", "--run", str(private), "--db",
                               str(tmp / "runs.db"), "--model", str(tmp / "missing.st")])
    assert done.exit_code == 0 and "PMA-PRIV-005" in done.output  # medium: not failing
    done = runner.invoke(app, ["audit", "privacy", "--run", "999", "--db",
                               str(tmp / "runs.db")])
    assert done.exit_code == 2 and "no run 999" in done.output


def test_canaries_are_secret_balanced_and_reproducible() -> None:
    ds = load_digits()
    augmented, record = with_canaries(ds, 400)
    assert len(augmented.x_train) == len(ds.x_train) + int(record.included.sum())
    assert 150 < record.included.sum() < 250  # fair coins
    again = CanarySet.from_dict(json.loads(json.dumps(record.to_dict())))
    np.testing.assert_array_equal(again.included, record.included)
    x1, y1 = record.make(ds.input_shape, ds.num_classes)
    x2, y2 = again.make(ds.input_shape, ds.num_classes)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    rows = {r.tobytes() for r in augmented.x_train}
    assert all((x1[i].tobytes() in rows) == bool(record.included[i]) for i in range(400))
    with pytest.raises(ConfigError):
        with_canaries(ds, 0)
    with pytest.raises(ConfigError, match="malformed"):
        CanarySet.from_dict({"m": 10, "seed": 1, "included": "zz"})


def test_the_ledger_of_a_run_is_its_claim(runs: tuple[Path, int, int]) -> None:
    tmp, _, private = runs
    with RunStore(tmp / "runs.db") as store:
        ledger = store.ledger(private)
        _, config = store.run(private)
    assert ledger and config["target_epsilon"] == 2.0
    assert "audit_canaries" in config and config["model_file"].endswith("private.safetensors")


def test_lira_statistic_separates_and_survives_missing_shadows() -> None:
    from privml.audit._lira import _ratio
    from privml.audit._mia import auc, roc

    rng = np.random.default_rng(0)
    n, k = 400, 8
    inside = rng.random((k, n)) < 0.5
    inside[:, 0] = True  # an example every shadow trained on (no "out" shadows)
    inside[:, 1] = False  # and one none did
    base = rng.normal(0, 1, n)
    phis = base + 2.0 * inside + rng.normal(0, 0.3, (k, n))
    member = rng.random(n) < 0.5
    target = base + 2.0 * member + rng.normal(0, 0.3, n)
    scores = _ratio(phis, inside, target)
    assert np.isfinite(scores).all()
    assert auc(roc(scores[member], scores[~member])) > 0.95
    # With per-example means it beats the plain score on the same data.
    assert auc(roc(scores[member], scores[~member])) > auc(roc(target[member],
                                                                 target[~member]))


def test_lira_end_to_end(tmp_path: Path) -> None:
    run = _sim(tmp_path, "small", "--clients", "2", "--per-round", "2", "--rounds", "1",
               "--epochs", "2")
    calls: list[int] = []
    report = audit_privacy(run, db=tmp_path / "runs.db", members=200, lira=2,
                           progress=lambda done, total: calls.append(done))
    m = _metrics(report)
    assert calls == [1, 2]
    assert 0.3 < m["lira_attack_auc"] < 0.8 and m["lira_attack_members"] == 200
    assert "lira_tpr_at_1pct_fpr_ci" in m
    with pytest.raises(ConfigError, match="shadow"):
        audit_privacy(run, db=tmp_path / "runs.db", lira=1)
