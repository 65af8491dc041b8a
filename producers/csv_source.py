"""Read readings from CSV files of many shapes into one validated, time-ordered frame.

The default shape is the bundled history (``ts,tank_id,pressure_kpa,temperature_c,
event``); :class:`CsvOptions` adapts to other separators, decimal commas, column
names, time formats and zones, units, absolute or gauge pressure (with its
plausibility limits), and one-file-per-tank layouts (tank ids from the files' paths,
:func:`tank_ids_for_paths`; a collision is an error). Parsing is vectorized pandas (the
models team loads ~500k rows for training), so validation is done column-wise with
the same limits as :mod:`tankwatch.codec`.

Bad rows (unparseable time, non-numeric or NaN values, out of the codec's range,
unknown event, wrong number of fields) are counted and skipped; the first few are
reported as ``file:line: reason`` and all are counted by reason
(:mod:`producers.csv_report` turns that into the commands' closing summary and drop
limit). ``strict=True`` raises :class:`CsvError` at the
first one instead. A file that cannot be read at all, or lacks a column, always raises
:class:`CsvError` with one line naming the file and the problem.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
>>> _ = p.write_text("ts,tank_id,pressure_kpa,temperature_c,event\\n"
...                  "2024-03-01T00:00:00Z,T01,101.3,14.5,\\n")
>>> r = load_frame([p])
>>> (float(r.frame.ts.iloc[0]), r.frame.tank_id.iloc[0], r.bad_rows)
(1709251200.0, 'T01', 0)
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from tankwatch.codec import (
    EVENTS,
    PRESSURE_REFERENCES,
    TEMPERATURE_RANGE_C,
    TS_RANGE_S,
    pressure_limits,
)
from tankwatch.errors import CsvError

log = logging.getLogger(__name__)

#: Multiply by this to get kPa.
PRESSURE_UNITS: dict[str, float] = {
    "kPa": 1.0,
    "Pa": 0.001,
    "MPa": 1000.0,
    "bar": 100.0,
    "mbar": 0.1,
    "psi": 6.894757293168361,
}
TEMPERATURE_UNITS = ("C", "F", "K")
#: How many ``file:line: reason`` messages a LoadResult keeps.
MAX_ERRORS = 10
FRAME_COLUMNS = ("ts", "tank_id", "pressure_kpa", "temperature_c", "event", "file", "line")

_TANK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HAS_OFFSET = r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)")


@dataclass(frozen=True)
class CsvOptions:
    """How to read a CSV. Defaults read the bundled history format.

    ``time_format``: None = auto (RFC 3339 / ISO 8601, or epoch seconds if the column
    is numeric); ``"epoch"`` / ``"epoch_ms"``; or a ``strftime`` pattern. Naive times
    are in ``timezone``. ``event_col`` None (or a column the file lacks) = no events.
    ``tank_from_filename``: one file per tank, the tank id comes from the file's path
    (:func:`tank_ids_for_paths`: the name without extensions, or the path relative to
    the files' common folder when names repeat, or ``tank_id_template``); ``tank_col``
    is then ignored. ``decimal``: the decimal mark of numbers (``","`` reads ``1,013``).
    ``pressure_reference``: ``absolute`` or ``gauge`` (what the pressure column is);
    it picks the plausibility limits (:func:`tankwatch.codec.pressure_limits`), which
    ``pressure_min_kpa`` / ``pressure_max_kpa`` override.
    """

    sep: str = ","
    time_col: str = "ts"
    tank_col: str = "tank_id"
    pressure_col: str = "pressure_kpa"
    temperature_col: str = "temperature_c"
    event_col: str | None = "event"
    time_format: str | None = None
    timezone: str = "UTC"
    tank_from_filename: bool = False
    pressure_unit: str = "kPa"
    temperature_unit: str = "C"
    decimal: str = "."
    pressure_reference: str = "absolute"
    pressure_min_kpa: float | None = None
    pressure_max_kpa: float | None = None
    tank_id_template: str | None = None

    def __post_init__(self) -> None:
        if not self.sep:
            raise CsvError("the CSV separator must not be empty")
        if len(self.decimal) != 1 or self.decimal.isdigit():
            raise CsvError(f"the decimal mark must be one character, got {self.decimal!r}")
        if self.decimal == self.sep:
            raise CsvError(
                f"the decimal mark and the separator are both {self.sep!r}: "
                "use --sep ';' with --decimal ','"
            )
        if self.pressure_reference not in PRESSURE_REFERENCES:
            raise CsvError(
                f"unknown pressure reference {self.pressure_reference!r} "
                "(expected absolute or gauge)"
            )
        self.pressure_limits()  # fails early on bad overrides
        if self.tank_id_template is not None:
            _check_template(self.tank_id_template)
        if self.pressure_unit not in PRESSURE_UNITS:
            raise CsvError(
                f"unknown pressure unit {self.pressure_unit!r} "
                f"(expected one of {', '.join(PRESSURE_UNITS)})"
            )
        if self.temperature_unit not in TEMPERATURE_UNITS:
            raise CsvError(
                f"unknown temperature unit {self.temperature_unit!r} (expected C, F or K)"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CsvError(f"unknown time zone {self.timezone!r}") from None

    def pressure_limits(self) -> tuple[float, float]:
        """(low, high) kPa plausibility limits for this reference and overrides."""
        try:
            return pressure_limits(
                self.pressure_reference, self.pressure_min_kpa, self.pressure_max_kpa
            )
        except ValueError as exc:
            raise CsvError(str(exc)) from None


@dataclass
class LoadResult:
    """``frame``: columns :data:`FRAME_COLUMNS`, sorted by (ts, tank_id), stable.

    ts is float64 epoch seconds (UTC); pressure_kpa / temperature_c float64 in kPa and
    degC; event str or None; file (category) and line (int64) point at the source row.
    ``rows_read``: non-blank data lines in the files; ``dropped``: bad rows by reason
    (they sum to ``bad_rows``); ``errors``: the first few as ``file:line: reason``.
    """

    frame: pd.DataFrame
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    files: int = 0
    options: CsvOptions | None = None


#: Fields of ``--tank-id-template``: ``{stem}`` the file name without extensions,
#: ``{parent}`` the folder it is in, ``{path}`` its path relative to the files'
#: common folder, without extensions, ``/`` replaced by ``-``.
TEMPLATE_FIELDS = ("stem", "parent", "path")
_EXTENSIONS = (".gz", ".csv", ".tsv", ".txt")


def _check_template(template: str) -> None:
    import string

    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise CsvError(f"bad --tank-id-template {template!r}: {exc}") from None
    unknown = [n for n in names if n not in TEMPLATE_FIELDS]
    if unknown or not names:
        raise CsvError(
            f"bad --tank-id-template {template!r}: use the fields "
            + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
        )


def _strip_ext(name: str) -> str:
    for suffix in _EXTENSIONS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def tank_id_from_path(path: str | Path) -> str:
    """``/x/T07.csv.gz`` -> ``T07`` (the name without its extensions)."""
    return _strip_ext(Path(path).name)


def tank_ids_for_paths(paths: Sequence[Path], template: str | None = None) -> dict[Path, str]:
    """Tank id of each file for one-file-per-tank archives.

    Without a template: the file name without extensions when all names differ,
    otherwise (``valve1/0.csv``, ``valve2/0.csv``) every file's path relative to the
    files' common folder, ``/`` replaced by ``-`` (``valve1-0``, ``valve2-0``). Two
    files that still get one id (the same file given twice, or a template that drops
    what tells them apart) is a CsvError naming both.

    >>> ids = tank_ids_for_paths([Path("a/v1/0.csv"), Path("a/v2/0.csv")])
    >>> sorted(ids.values())
    ['v1-0', 'v2-0']
    """
    import os

    resolved = [p.resolve() for p in paths]
    if len(resolved) > 1:
        common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    else:
        common = resolved[0].parent if resolved else Path(".")

    def fields(real: Path) -> dict[str, str]:
        rel = real.relative_to(common)
        return {
            "stem": _strip_ext(real.name),
            "parent": real.parent.name,
            "path": "-".join([*rel.parent.parts, _strip_ext(rel.name)]),
        }

    if template is None:
        stems = [_strip_ext(r.name) for r in resolved]
        template = "{stem}" if len(set(stems)) == len(stems) else "{path}"
    out: dict[Path, str] = {}
    owner: dict[str, Path] = {}
    for path, real in zip(paths, resolved, strict=True):
        tank = template.format(**fields(real))
        if tank in owner:
            raise CsvError(
                f"tank id collision: {owner[tank]} and {path} both give tank id {tank!r} "
                "(one file per tank; use --tank-id-template with {path} or {parent})"
            )
        if not _TANK_ID_RE.match(tank):
            raise CsvError(
                f"{path}: tank id {tank!r} from the file name is not valid "
                "(letters, digits, . _ : - ; use --tank-id-template)"
            )
        owner[tank] = path
        out[path] = tank
    return out


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_raw(path: Path, options: CsvOptions) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """All needed columns as strings, plus (line, reason) of lines with a wrong field
    count (pandas skips those; we report them)."""
    needed = [options.time_col, options.pressure_col, options.temperature_col]
    if not options.tank_from_filename:
        needed.append(options.tank_col)
    try:
        with _open_text(path) as fh:
            header_line = fh.readline()
            if not header_line.strip():
                raise CsvError(f"{path}: empty file (no header line)")
            header = [h.strip() for h in header_line.rstrip("\r\n").split(options.sep)]
            missing = [c for c in needed if c not in header]
            if missing:
                hint = ""
                if len(header) == 1:
                    found = [s for s in (",", ";", "\t", "|") if s in header_line]
                    if found:
                        hint = (
                            " (the header has one column: wrong separator?"
                            f" it contains {found[0]!r})"
                        )
                raise CsvError(
                    f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}"
                    f"; found {', '.join(repr(h) for h in header[:8])}{hint}"
                )
            use = [*needed]
            if options.event_col and options.event_col in header:
                use.append(options.event_col)
            fh.seek(0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = pd.read_csv(
                    fh,
                    sep=options.sep,
                    dtype=str,
                    keep_default_na=False,
                    skip_blank_lines=False,
                    skipinitialspace=True,
                    on_bad_lines="warn",
                    usecols=lambda c: str(c).strip() in use,
                    engine="c" if len(options.sep) == 1 else "python",
                )
    except CsvError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CsvError(f"{path}: cannot read: {reason}") from None
    except UnicodeDecodeError:
        raise CsvError(f"{path}: cannot read: not UTF-8 text") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CsvError(f"{path}: cannot parse CSV: {first}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    skipped: list[tuple[int, str]] = []
    for w in caught:
        for line_text in str(w.message).splitlines():
            m = _SKIPPED_LINE.search(line_text)
            if m:
                skipped.append((int(m.group(1)), m.group(2).strip()))
    return frame, skipped


def _parse_times(raw: pd.Series, options: CsvOptions) -> np.ndarray:
    """Time strings -> float64 epoch seconds (NaN where unparseable)."""
    text = raw.astype(str)
    fmt = options.time_format
    if fmt in ("epoch", "epoch_s", "unix"):
        return _numbers(text, options.decimal)
    if fmt == "epoch_ms":
        return _numbers(text, options.decimal) / 1000.0
    # Auto: numeric -> epoch seconds. Deciding on a sample keeps this O(1) per file.
    sample = text[text != ""].head(200)
    if (
        fmt is None
        and len(sample)
        and int(np.isfinite(_numbers(sample, options.decimal)).sum()) * 2 >= len(sample)
    ):
        return _numbers(text, options.decimal)
    tz = options.timezone
    epoch = pd.Timestamp(0, tz="UTC")
    out = np.full(len(text), np.nan)
    if fmt is None:
        if tz == "UTC":  # naive = UTC: one vectorized parse does everything
            dt = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            return ((dt - epoch) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        has_offset = text.str.contains(_HAS_OFFSET, regex=True).to_numpy(dtype=bool)
        if has_offset.any():
            dt = pd.to_datetime(text[has_offset], format="ISO8601", utc=True, errors="coerce")
            out[has_offset] = ((dt - epoch) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        naive = ~has_offset
        if naive.any():
            dt = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
            local = dt.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            out[naive] = ((local - epoch) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        return out
    dt = pd.to_datetime(text, format=fmt, errors="coerce")
    if isinstance(dt.dtype, pd.DatetimeTZDtype):
        dt = dt.dt.tz_convert("UTC")
    else:
        dt = dt.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return ((dt - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)


def _numbers(raw: pd.Series, decimal: str = ".") -> np.ndarray:
    """Strings -> float64 (NaN where not a number); ``decimal`` "," reads ``1,013``.

    With a decimal comma a dot is not accepted as the decimal mark (``1.013`` would be
    ambiguous: a thousands separator in many locales), so such a value is not a number.
    """
    if decimal != ".":
        raw = raw.where(~raw.str.contains(".", regex=False), "x")
        raw = raw.str.replace(decimal, ".", regex=False)
    return pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _events_or_none(values: np.ndarray, has_event: np.ndarray) -> pd.Series:
    """An object Series: the event name, or None (pandas 3 would otherwise store NaN)."""
    out = np.full(len(values), None, dtype=object)
    out[has_event] = values[has_event]
    return pd.Series(out, dtype="object")


def _check_time_format(options: CsvOptions) -> None:
    fmt = options.time_format
    if fmt is None or fmt in ("epoch", "epoch_s", "unix", "epoch_ms"):
        return
    if "%" not in fmt:
        raise CsvError(
            f"bad --time-format {fmt!r}: use 'epoch', 'epoch_ms' or a strftime pattern like "
            "'%d/%m/%Y %H:%M'"
        )


def _load_one(
    path: Path, options: CsvOptions, tank_id: str | None = None
) -> tuple[pd.DataFrame, list[tuple[int, str]], dict[str, int], int]:
    """One file -> (valid rows with FRAME_COLUMNS, sorted (line, reason) of the first
    bad rows, bad rows by reason, non-blank data rows read)."""
    raw, skipped = _read_raw(path, options)
    n = len(raw)
    # Data row i sits on file line i + 2 unless pandas skipped malformed lines before it.
    skipped_lines = np.array(sorted(s[0] for s in skipped), dtype=np.int64)
    lines = np.setdiff1d(np.arange(2, n + 2 + len(skipped_lines), dtype=np.int64), skipped_lines)[
        :n
    ]
    cols = {c: raw[c] for c in raw.columns}
    blank = np.ones(n, dtype=bool)
    for series in cols.values():
        blank &= (series == "").to_numpy(dtype=bool)

    ts = _parse_times(cols[options.time_col], options)
    if options.tank_from_filename:
        tank = pd.Series(np.full(n, tank_id or tank_id_from_path(path), dtype=object))
    else:
        tank = cols[options.tank_col].astype(str)
    dec = options.decimal
    p = _numbers(cols[options.pressure_col], dec) * PRESSURE_UNITS[options.pressure_unit]
    t = _numbers(cols[options.temperature_col], dec)
    p_lo, p_hi = options.pressure_limits()
    if options.temperature_unit == "F":
        t = (t - 32.0) * (5.0 / 9.0)
    elif options.temperature_unit == "K":
        t = t - 273.15
    if options.event_col and options.event_col in cols:
        ev = cols[options.event_col].astype(str)
        has_event = (ev != "").to_numpy(dtype=bool)
        known = ev.isin(EVENTS).to_numpy(dtype=bool)
    else:
        ev = pd.Series(np.full(n, "", dtype=object))
        has_event = np.zeros(n, dtype=bool)
        known = np.zeros(n, dtype=bool)

    # Validate each distinct id once: a file has few tanks and many rows.
    codes, uniques = pd.factorize(tank)
    ok_unique = np.array([bool(_TANK_ID_RE.match(str(u))) for u in uniques] + [False])
    tank_ok = ok_unique[codes]  # code -1 (missing) picks the trailing False
    # Checks in priority order: a row gets the first reason that applies.
    checks: list[tuple[np.ndarray, str]] = [
        (np.isnan(ts), f"cannot parse time in column {options.time_col!r}"),
        (~((ts >= TS_RANGE_S[0]) & (ts <= TS_RANGE_S[1])), "time outside 1970..3000"),
        (~tank_ok, "missing or invalid tank id"),
        (np.isnan(p), f"pressure in {options.pressure_col!r} is not a number"),
        (np.isnan(t), f"temperature in {options.temperature_col!r} is not a number"),
        (~np.isfinite(p) | ~np.isfinite(t), "value is not finite"),
        (
            ~((p >= p_lo) & (p <= p_hi)),
            f"pressure outside {p_lo:g}..{p_hi:g} kPa ({options.pressure_reference})",
        ),
        (
            ~((t >= TEMPERATURE_RANGE_C[0]) & (t <= TEMPERATURE_RANGE_C[1])),
            f"temperature outside {TEMPERATURE_RANGE_C[0]:g}..{TEMPERATURE_RANGE_C[1]:g} degC",
        ),
        (has_event & ~known, "unknown event"),
    ]
    bad = np.zeros(n, dtype=bool)
    reasons: list[tuple[int, str]] = list(skipped[:MAX_ERRORS])
    by_reason: dict[str, int] = {}
    if skipped:
        by_reason["wrong number of fields"] = len(skipped)
    for mask, reason in checks:
        new = mask & ~bad & ~blank
        count = int(new.sum())
        if count:
            by_reason[reason] = count
            # Only the first few are kept as examples; the rest are counted.
            reasons.extend((int(line), reason) for line in lines[new][:MAX_ERRORS])
        bad |= mask
    good = ~bad & ~blank
    frame = pd.DataFrame(
        {
            "ts": ts[good],
            "tank_id": tank.to_numpy(dtype=object)[good],
            "pressure_kpa": p[good],
            "temperature_c": t[good],
            # object dtype so "no event" stays None (pandas 3 would make it a NaN str).
            "event": _events_or_none(ev.to_numpy(dtype=object)[good], has_event[good]),
            "file": str(path),
            "line": lines[good],
        }
    )
    reasons.sort(key=lambda r: r[0])
    rows_read = int((~blank).sum()) + len(skipped)
    return frame, reasons, by_reason, rows_read


def load_frame(
    paths: str | Path | Iterable[str | Path],
    options: CsvOptions | None = None,
    strict: bool = False,
) -> LoadResult:
    """Load, validate and merge CSV files into one frame in event-time order.

    Rows are ordered by ts, then tank_id, stable (same-key rows keep file order).
    Raises CsvError for unreadable files / missing columns, and with ``strict`` for the
    first bad row (``file:line: reason``).
    """
    options = options or CsvOptions()
    _check_time_format(options)
    if isinstance(paths, str | Path):
        paths = [paths]
    path_list: Sequence[Path] = [Path(p) for p in paths]
    if not path_list:
        raise CsvError("no CSV files given")
    ids = (
        tank_ids_for_paths(path_list, options.tank_id_template)
        if options.tank_from_filename
        else {}
    )
    frames: list[pd.DataFrame] = []
    bad_rows = 0
    rows_read = 0
    dropped: dict[str, int] = {}
    errors: list[str] = []
    for path in path_list:
        frame, reasons, by_reason, n_read = _load_one(path, options, ids.get(path))
        if reasons and strict:
            line, reason = reasons[0]
            raise CsvError(f"{path}:{line}: {reason or 'bad row'}")
        rows_read += n_read
        for reason, count in by_reason.items():
            dropped[reason] = dropped.get(reason, 0) + count
            bad_rows += count
        for line, reason in reasons:
            if reason and len(errors) < MAX_ERRORS:
                errors.append(f"{path}:{line}: {reason}")
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    merged["file"] = merged["file"].astype("category")
    merged["event"] = merged["event"].astype(object).where(merged["event"].notna(), None)
    ts = merged["ts"].to_numpy()
    tank = merged["tank_id"].to_numpy(dtype=object)
    already_sorted = bool(
        np.all((ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (tank[1:] >= tank[:-1])))
    )
    if not already_sorted:
        merged = merged.sort_values(["ts", "tank_id"], kind="stable", ignore_index=True)
    if bad_rows:
        log.info("skipped bad CSV rows", extra={"bad_rows": bad_rows, "first": errors[:3]})
    return LoadResult(
        merged.reset_index(drop=True),
        bad_rows,
        errors,
        rows_read=rows_read,
        dropped=dropped,
        files=len(path_list),
        options=options,
    )
