"""The evaluation's outputs: a markdown report and PNG plots (matplotlib, Agg).

Kept apart from :mod:`models.evaluate` so the streaming/metrics code stays small.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.dataprep import TickGrid
    from models.stream_result import StreamResult

__all__ = ["write_plots", "write_report"]

_UNITS = {"pressure_kpa": "kPa", "temperature_c": "°C"}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _input_lines(inp: dict[str, Any] | None) -> list[str]:
    """What was read: rows read / used / dropped by reason, and the data warnings."""
    if not inp:
        return []
    reasons = ", ".join(f"{r} {n:,}" for r, n in inp["dropped_by_reason"].items()) or "none"
    lines = [
        f"Input: {inp['rows_read']:,} CSV rows read, {inp['rows_used']:,} readings used "
        f"({len(inp['tanks'])} tanks, {inp['pressure_reference']} pressure); dropped "
        f"{inp['rows_dropped']:,} ({reasons}); {inp['merged_into_earlier_reading_of_tick']:,} "
        "readings shared a tick with an earlier one of their tank (the first counts).",
        "",
    ]
    for warning in inp.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    return lines


def write_report(path: Path, summary: dict[str, Any]) -> None:
    """``evaluation.md``: fleet table per feature/horizon, per-tank table, anomalies."""
    hz = summary["horizons"]
    lines = [
        f"# Evaluation of `{summary['model_version']}`",
        "",
        f"Engine `{summary['engine']}`, data {', '.join(summary['data_files'])}; holdout "
        f"{summary['holdout']['start']} .. {summary['holdout']['end']} "
        f"({summary['holdout']['ticks']} ticks, {summary['holdout']['tanks']} tanks; "
        f"{summary['holdout']['rule']}). The history is streamed tick by tick through the "
        "engine exactly as the pipeline does (masked missing readings, per-row resets at "
        "boundaries); horizon h is the forecast for t+h made at t (h = 1 is the next-step "
        "forecast). Persistence = the reading at t. Targets after a boundary are not scored.",
        "",
        *_input_lines(summary.get("input")),
        "## Fleet",
        "",
        "| feature | horizon (ticks) | RMSE | persistence RMSE | ratio | MAE | persistence MAE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in summary["fleet"].items():
        unit = _UNITS.get(name, "")
        for h in hz:
            r = rows[str(h)]
            lines.append(
                f"| {name} ({unit}) | {h} | {_fmt(r['rmse'])} | {_fmt(r['persistence_rmse'])} "
                f"| **{_fmt(r['rmse_ratio'], 3)}** | {_fmt(r['mae'])} "
                f"| {_fmt(r['persistence_mae'])} |"
            )
    if summary.get("skill"):
        lines += ["", *skill_lines(summary["skill"], hz)]
        lines.append(
            f"\nForecasts clipped to the artifact's bounds: {summary.get('forecasts_clipped', 0)}."
        )
    lines += ["", "## Per tank (RMSE, model / persistence)", ""]
    feats = list(summary["fleet"])
    header = "| tank | " + " | ".join(f"{f} h={h}" for f in feats for h in (hz[0], hz[-1])) + " |"
    lines += [header, "|---|" + "---:|" * (2 * len(feats))]
    for tank, per in summary["per_tank"].items():
        cells = []
        for f in feats:
            for h in (hz[0], hz[-1]):
                r = per[f][str(h)]
                cells.append(f"{_fmt(r['rmse'])} / {_fmt(r['persistence_rmse'])}")
        lines.append(f"| {tank} | " + " | ".join(cells) + " |")
    anomaly = summary.get("anomaly")
    if anomaly:
        lines += _anomaly_lines(anomaly)
        if anomaly.get("point_level"):
            lines += point_lines(anomaly["point_level"])
    if summary.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in summary["plots"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def point_lines(point: dict[str, Any]) -> list[str]:
    """Point-level table: our flags and the isolation forest, same run, holdout."""

    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    lines = [
        "",
        "### Point level (holdout; ours vs isolation forest in the same run)",
        "",
        f"Isolation forest: {point['isolation_forest_setup']}.",
        "",
        "| detector | precision | recall | F1 | false-alarm rate | missed-alarm rate "
        "| events hit | false episodes | detection delays (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("ours", "isolation_forest"):
        m = point[name]
        delays = ", ".join(f"{d:.0f}" for d in m["detection_delay_s"]) or "—"
        lines.append(
            f"| {name.replace('_', ' ')} | {f(m['precision'])} | {f(m['recall'])} | "
            f"{f(m['f1'])} | {f(m['false_alarm_rate'])} | {f(m['missed_alarm_rate'])} | "
            f"{m['events_hit']}/{m['events']} | {m['false_episodes']} | {delays} |"
        )
    return lines


def skill_lines(skill: dict[str, Any], hz: Any) -> list[str]:
    """The skill-gate table: RMSE ratio to persistence of the LSTM, Holt and the served
    mix per feature and horizon, and which source is served."""
    lines = [
        "## Skill gate (RMSE / persistence RMSE)",
        "",
        "| feature | h | LSTM | Holt (damped) | served | served from |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, rows in skill.items():
        for h in hz:
            r = rows.get(str(h))
            if r is None:
                continue
            lines.append(
                f"| {name} | {h} | {_fmt(r['lstm_ratio'], 3)} | {_fmt(r['holt_ratio'], 3)} "
                f"| **{_fmt(r['served_ratio'], 3)}** | {r['source']} |"
            )
    return lines


def _per_week(v: Any) -> str:
    return _fmt(v, 2)


def _anomaly_lines(anomaly: dict[str, Any]) -> list[str]:
    """The "Anomaly flags vs labels" section: main table and the trade-off table."""
    lines = [
        "",
        "## Anomaly flags vs labels",
        "",
        f"Labels: `{anomaly['labels_file']}`; scorer: {anomaly['scorer']}. A flag counts "
        f"for a label from its start to {anomaly['whole_stream']['grace_ticks']} ticks "
        "after its end. The scorer's settings were chosen on the tuning part (before the "
        "holdout) only; a false episode is a flag episode on no label, and a tank-week is "
        "7 days of one tank's readings.",
        "",
        "| range | labels | detected | event recall | flag episodes | false episodes "
        "| false / tank-week | episode precision | tick precision | tick recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("whole_stream", "tuning_part", "holdout"):
        a = anomaly.get(key)
        if a is None:
            continue
        lines.append(
            f"| {key.replace('_', ' ')} | {a['labels']} | {a['labels_detected']} "
            f"| {_fmt(a['event_recall'], 2)} | {a['episodes']} | {a.get('false_episodes', '–')} "
            f"| {_per_week(a.get('false_episodes_per_tank_week'))} "
            f"| {_fmt(a['episode_precision'], 2)} | {_fmt(a['tick_precision'], 2)} "
            f"| {_fmt(a['tick_recall'], 2)} |"
        )
    tradeoff = anomaly.get("tradeoff")
    if tradeoff:
        lines += [
            "",
            "Trade-off: the same residuals replayed through other scorer settings "
            "(detected labels / labels, false episodes, false episodes per tank-week).",
            "",
            "| setting | whole stream | tuning part | holdout |",
            "|---|---|---|---|",
        ]
        for row in tradeoff:
            cells = []
            for key in ("whole_stream", "tuning_part", "holdout"):
                a = row[key]
                cells.append(
                    f"{a['labels_detected']}/{a['labels']}, {a['false_episodes']} "
                    f"({_per_week(a['false_episodes_per_tank_week'])})"
                )
            lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
    return lines


def write_plots(
    folder: Path,
    grid: TickGrid,
    result: StreamResult,
    holdout_start: int,
    summary: dict[str, Any],
    n_tanks: int = 3,
) -> list[Path]:
    """Actual vs forecast for a few tanks (holdout) and RMSE ratio by horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    feats = list(summary["fleet"])
    hmax = len(next(iter(summary["fleet_rmse_ratio_by_horizon"].values())))

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    hs = np.arange(1, hmax + 1)
    for name, ratios in summary["fleet_rmse_ratio_by_horizon"].items():
        ax.plot(hs, ratios, marker=".", label=name)
    ax.axhline(1.0, color="grey", linestyle=":", label="persistence")
    ax.set_xlabel("horizon (ticks)")
    ax.set_ylabel("RMSE / persistence RMSE")
    ax.set_ylim(bottom=0)
    ax.set_title("fleet error by horizon (holdout)")
    ax.legend()
    fig.tight_layout()
    path = folder / "error_by_horizon.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    # The tanks with the most holdout readings, first few in id order: stable choice.
    counts = grid.present[holdout_start:].sum(0)
    order = sorted(np.argsort(-counts, kind="stable")[:n_tanks])
    times = grid.tick_times()  # the grid may skip long gaps: plot against real time
    hours = (times - times[min(holdout_start, grid.n_ticks - 1)]) / 3600.0
    span = slice(holdout_start, grid.n_ticks)
    for j in order:
        tank = grid.tank_ids[j]
        fig, axes = plt.subplots(len(feats), 1, figsize=(9, 2.6 * len(feats)), dpi=100, sharex=True)
        for fi, name in enumerate(feats):
            ax = np.atleast_1d(axes)[fi]
            ax.plot(hours[span], grid.values[span, j, fi], lw=1.0, color="black", label="actual")
            ax.plot(hours[span], result.next_fc[span, j, fi], lw=0.8, label="next step")
            ax.plot(
                hours[span],
                result.far_fc[span, j, fi],
                lw=0.8,
                alpha=0.8,
                label=f"{hmax} ticks ahead",
            )
            ax.set_ylabel(f"{name} ({_UNITS.get(name, '')})")
            ax.legend(loc="upper right", fontsize=7)
        np.atleast_1d(axes)[-1].set_xlabel("hours since holdout start")
        fig.suptitle(f"{tank}: actual vs forecast (holdout)")
        fig.tight_layout()
        path = folder / f"tank_{tank}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
