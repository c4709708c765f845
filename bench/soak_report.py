"""The fault soak's figures (``bench/results/soak.json``, written by ``tests/soak``) as a
section of ``BENCHMARKS.md``. ``make soak`` runs the soak, then this.

    .venv/bin/python bench/soak_report.py [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402

START, END = "<!-- soak:start -->", "<!-- soak:end -->"


def render(d: dict[str, Any], date: str) -> str:
    mem = d["memory"]
    last = mem["server"][-1]
    clients = mem["client_processes"]
    growth = [c["rss_growth_mib"] for c in clients]
    faults = sorted(d["faults_injected"].items(), key=lambda kv: -kv[1])
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(d["refusals_by_code_server_log"].items(),
                                                       key=lambda kv: -kv[1]))
    down = d["down_seconds"]
    lines = [
        START, "## Fault soak: 100 clients, a coordinator killed and resumed", "",
        f"`make soak` ({d['duration_s']:.0f} s in all) — {date}. `privml server` on loopback "
        f"({' '.join(d['server_flags'])}), {d['clients']} clients with their own "
        f"certificates in {d['client_processes']} processes; the coordinator SIGKILLed at "
        f"random moments and restarted with `--resume` on the same ports.", "",
        "| figure | value |", "|---|---:|",
        f"| rounds (completed / failed / open at the stop) | {d['rounds']} "
        f"({d['rounds_completed']} / {d['rounds_failed']} / {d['rounds_open_at_stop']}) |",
        f"| updates accepted (store) / told accepted (client logs) | "
        f"{d['updates_accepted']:,} / {d['updates_told_accepted']:,} |",
        f"| rounds replayed from the stored updates: max abs diff to the stored model | "
        f"{d['replayed_rounds']}: {d['replay_max_abs_diff_per_round']:g} "
        f"(final model {d['replay_final_max_abs_diff']:g}) |",
        f"| coordinator kills / restarts (down {min(down):.1f}-{max(down):.1f} s) | "
        f"{d['server_kills']} / {d['server_restarts']} |",
        f"| faults injected / answered wrongly / unanswered (server down) | "
        f"{sum(d['faults_injected'].values()):,} / {d['faults_answered_wrongly']} / "
        f"{d['faults_unanswered_server_down']} |",
        f"| 5xx seen by clients / error lines in the server log | {d['client_5xx']} / "
        f"{d['server_log_error_lines']} |",
        f"| client loops restarted (retries exhausted) | {d['client_restarts']} |",
        f"| last coordinator RSS, {last['early_at_s']:.0f} s -> {last['late_at_s']:.0f} s "
        f"| {last['early_mib']['rss']:.1f} -> {last['late_mib']['rss']:.1f} MiB |",
        f"| client processes' RSS growth, {clients[0]['early_at_s']:.0f} s -> "
        f"{clients[0]['late_at_s']:.0f} s | {min(growth):.1f}-{max(growth):.1f} MiB "
        f"(bound {mem['bound_mib']:g}) |",
        "", "Faults: " + ", ".join(f"{k} {v}" for k, v in faults) + ".", "",
        f"Refusals in the coordinator's security log: {refusals}.", "",
        "Checks (the soak fails otherwise): every update the store lists as accepted is in "
        "the client logs as told accepted, and the other way round, once each (by update "
        "id, body hash, round, client, examples); rounds consecutive, each closed with an "
        "outcome; every stored model and the final model file equal to a replay of the "
        "stored accepted updates through FedAvg; no Traceback or 5xx; RSS growth under the "
        "bound. Full figures: `bench/results/soak.json`.",
        END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=HERE / "results" / "soak.json")
    args = ap.parse_args()
    data = json.loads(args.json.read_text())
    date = dt.date.fromtimestamp(args.json.stat().st_mtime).isoformat()
    section = render(data, date)
    print(section)
    write_section(START, END, section)


if __name__ == "__main__":
    main()
