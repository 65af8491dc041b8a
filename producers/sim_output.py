"""Write simulated readings in the bundled history format, byte-for-byte reproducibly.

History CSV (the format the models and pipeline rely on)::

    ts,tank_id,pressure_kpa,temperature_c,event
    2024-03-01T00:00:00Z,T01,101.734,9.812,

``ts`` RFC 3339 UTC with ``Z``; rows sorted by ts then tank_id; ``event`` empty when
none; missing readings are simply absent; values with 3 decimals (1 Pa, 1 mK).
A ``.gz`` path is gzip with mtime 0 and no file name in the header, so the same
readings always give the same bytes.

Labels CSV: ``tank_id,start,end,kind`` (start/end inclusive, RFC 3339 UTC).
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from producers.simulator import EVENT_NAMES, SimChunk
from tankwatch.codec import format_ts
from tankwatch.errors import ConfigError

HISTORY_HEADER = "ts,tank_id,pressure_kpa,temperature_c,event"
LABELS_HEADER = "tank_id,start,end,kind"


def history_lines(chunk: SimChunk, tank_ids: Sequence[str]) -> Iterator[str]:
    """CSV lines (with newline) of the present readings, sorted by ts then tank_id."""
    order = np.argsort(np.asarray(tank_ids), kind="stable")
    ids = [tank_ids[i] for i in order]
    events = {code: name for code, name in EVENT_NAMES.items()}
    p = np.round(chunk.pressure_kpa[:, order], 3)
    t = np.round(chunk.temperature_c[:, order], 3)
    present = chunk.present[:, order]
    event = chunk.event[:, order]
    for k in range(len(chunk.ts)):
        stamp = format_ts(float(chunk.ts[k]))
        row_p, row_t, row_e = p[k].tolist(), t[k].tolist(), event[k].tolist()
        for j in np.flatnonzero(present[k]).tolist():
            ev = events.get(row_e[j], "")
            yield f"{stamp},{ids[j]},{row_p[j]:.3f},{row_t[j]:.3f},{ev}\n"


def _open_text_for_write(path: Path) -> io.TextIOBase:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        raw = open(path, "wb")  # noqa: SIM115 - closed through the wrapper
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
        wrapper = io.TextIOWrapper(gz, encoding="utf-8", newline="")
        # Closing the wrapper closes gz but not a fileobj it did not open: chain it.
        original_close = wrapper.close

        def close() -> None:
            original_close()
            raw.close()

        wrapper.close = close  # type: ignore[method-assign]
        return wrapper
    return open(path, "w", encoding="utf-8", newline="")


def write_history(chunk: SimChunk, tank_ids: Sequence[str], path: str | Path) -> int:
    """Write the history CSV (gzip if ``.gz``) atomically; returns the number of rows."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + (".gz" if path.suffix == ".gz" else ""))
    rows = 0
    try:
        out = _open_text_for_write(tmp)
        try:
            out.write(HISTORY_HEADER + "\n")
            batch: list[str] = []
            for line in history_lines(chunk, tank_ids):
                batch.append(line)
                if len(batch) >= 10000:
                    out.write("".join(batch))
                    rows += len(batch)
                    batch.clear()
            out.write("".join(batch))
            rows += len(batch)
        finally:
            out.close()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return rows


def write_labels(labels: Sequence[tuple[str, float, float, str]], path: str | Path) -> int:
    """Write the anomaly labels CSV; returns the number of labels."""
    path = Path(path)
    lines = [LABELS_HEADER] + [
        f"{tank},{format_ts(start)},{format_ts(end)},{kind}" for tank, start, end, kind in labels
    ]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return len(labels)
