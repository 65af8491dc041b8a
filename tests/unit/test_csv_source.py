"""CSV reading: formats, units, time zones, per-tank files, gzip, bad rows, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from producers.csv_source import CsvOptions, load_frame, tank_id_from_path
from tankwatch.errors import CsvError

HEADER = "ts,tank_id,pressure_kpa,temperature_c,event\n"
T0 = 1709251200.0  # 2024-03-01T00:00:00Z


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_default_format_loads_sorted_with_events(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "a.csv",
        HEADER
        + "2024-03-01T00:01:00Z,T02,101.5,14.0,\n"
        + "2024-03-01T00:00:00Z,T02,101.4,14.1,refill\n"
        + "2024-03-01T00:00:00Z,T01,101.3,14.2,\n",
    )
    r = load_frame(p)
    f = r.frame
    assert list(f.columns[:5]) == ["ts", "tank_id", "pressure_kpa", "temperature_c", "event"]
    assert f["ts"].tolist() == [T0, T0, T0 + 60]
    assert f["tank_id"].tolist() == ["T01", "T02", "T02"]
    assert f["event"].tolist() == [None, "refill", None]
    assert f["line"].tolist() == [4, 3, 2]
    assert f["ts"].dtype == np.float64 and f["pressure_kpa"].dtype == np.float64
    assert r.bad_rows == 0 and r.errors == []


def test_other_separator_column_names_time_format_and_zone(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "plant.csv",
        "Zeit;Tank;Druck;Temp\n"
        "01.03.2024 01:00;A-1;1.013;59\n"  # Europe/Berlin in winter = UTC+1
        "01.03.2024 01:01;A-1;1.014;60.8\n",
    )
    opts = CsvOptions(
        sep=";",
        time_col="Zeit",
        tank_col="Tank",
        pressure_col="Druck",
        temperature_col="Temp",
        event_col=None,
        time_format="%d.%m.%Y %H:%M",
        timezone="Europe/Berlin",
        pressure_unit="bar",
        temperature_unit="F",
    )
    f = load_frame(p, opts).frame
    assert f["ts"].tolist() == [T0, T0 + 60]
    assert f["pressure_kpa"].tolist() == pytest.approx([101.3, 101.4])
    assert f["temperature_c"].tolist() == pytest.approx([15.0, 16.0])
    assert f["event"].tolist() == [None, None]


def test_naive_iso_times_use_the_timezone_and_offsets_win(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "a.csv",
        HEADER
        + "2024-07-01T02:00:00,T01,101,14,\n"  # naive, New York summer = UTC-4
        + "2024-07-01T06:00:00Z,T02,101,14,\n",
    )
    f = load_frame(p, CsvOptions(timezone="America/New_York")).frame
    assert f["ts"].tolist() == [1719813600.0, 1719813600.0]


def test_epoch_seconds_auto_and_epoch_ms(tmp_path: Path) -> None:
    p = _write(tmp_path / "e.csv", HEADER + f"{T0:.0f},T01,101,14,\n{T0 + 60:.1f},T01,101,14,\n")
    assert load_frame(p).frame["ts"].tolist() == [T0, T0 + 60]
    q = _write(tmp_path / "ms.csv", HEADER + f"{T0 * 1000:.0f},T01,101,14,\n")
    assert load_frame(q, CsvOptions(time_format="epoch_ms")).frame["ts"].tolist() == [T0]


def test_kelvin_pascal_psi_units(tmp_path: Path) -> None:
    p = _write(tmp_path / "u.csv", HEADER + "2024-03-01T00:00:00Z,T01,101325,288.15,\n")
    f = load_frame(p, CsvOptions(pressure_unit="Pa", temperature_unit="K")).frame
    assert f["pressure_kpa"].iloc[0] == pytest.approx(101.325)
    assert f["temperature_c"].iloc[0] == pytest.approx(15.0)
    q = _write(tmp_path / "psi.csv", HEADER + "2024-03-01T00:00:00Z,T01,14.6959,15,\n")
    assert load_frame(q, CsvOptions(pressure_unit="psi")).frame["pressure_kpa"].iloc[
        0
    ] == pytest.approx(101.325, abs=1e-3)


def test_one_file_per_tank_ids_from_file_names_merged_in_time_order(tmp_path: Path) -> None:
    a = _write(
        tmp_path / "T07.csv", "time,p,t\n2024-03-01T00:00:00Z,101,14\n2024-03-01T00:02:00Z,101,14\n"
    )
    b_path = tmp_path / "T03.csv.gz"
    with gzip.open(b_path, "wt", encoding="utf-8") as fh:
        fh.write("time,p,t\n2024-03-01T00:01:00Z,102,15\n2024-03-01T00:02:00Z,102,15\n")
    opts = CsvOptions(
        time_col="time", pressure_col="p", temperature_col="t", tank_from_filename=True
    )
    f = load_frame([a, b_path], opts).frame
    assert list(zip(f["ts"] - T0, f["tank_id"], strict=True)) == [
        (0, "T07"),
        (60, "T03"),
        (120, "T03"),
        (120, "T07"),
    ]
    assert set(f["file"].astype(str)) == {str(a), str(b_path)}
    assert tank_id_from_path("/x/T07.csv.gz") == "T07"


def test_gzip_default_format(tmp_path: Path) -> None:
    p = tmp_path / "h.csv.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write(HEADER + "2024-03-01T00:00:00Z,T01,101.3,14.5,maintenance\n")
    f = load_frame(p).frame
    assert f["event"].tolist() == ["maintenance"]


BAD = (
    HEADER
    + "2024-03-01T00:00:00Z,T01,101.3,14.5,\n"  # 2 ok
    + "not-a-time,T01,101,14,\n"  # 3 time
    + "2024-03-01T00:01:00Z,T01,abc,14,\n"  # 4 non-numeric
    + "2024-03-01T00:02:00Z,T01,NaN,14,\n"  # 5 NaN
    + "2024-03-01T00:03:00Z,T01,9999,14,\n"  # 6 out of range
    + "2024-03-01T00:04:00Z,T01,101,14,exploded\n"  # 7 unknown event
    + "\n"  # 8 blank: ignored, not bad
    + "2024-03-01T00:05:00Z,,101,14,\n"  # 9 no tank
    + "2024-03-01T00:06:00Z,T01,101,inf,\n"  # 10 not finite
    + "2024-03-01T00:07:00Z,T01,101.4,14.4,\n"  # 11 ok
)


def test_bad_rows_are_counted_reported_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    p = _write(tmp_path / "bad.csv", BAD)
    r = load_frame(p)
    assert r.frame["line"].tolist() == [2, 11]
    assert r.bad_rows == 7
    lines = [int(e.split(":")[1]) for e in r.errors]
    assert lines == [3, 4, 5, 6, 7, 9, 10]
    assert all(e.startswith(f"{p}:") for e in r.errors)
    assert "time" in r.errors[0] and "unknown event" in r.errors[4]


def test_strict_mode_raises_at_the_first_bad_row(tmp_path: Path) -> None:
    p = _write(tmp_path / "bad.csv", BAD)
    with pytest.raises(CsvError, match=rf"^{p}:3: .*time"):
        load_frame(p, strict=True)


def test_many_bad_rows_keep_a_few_messages_and_count_all(tmp_path: Path) -> None:
    body = "".join(f"2024-03-01T00:00:{i:02d}Z,T01,x,1,\n" for i in range(50))
    r = load_frame(_write(tmp_path / "m.csv", HEADER + body))
    assert r.bad_rows == 50 and 0 < len(r.errors) <= 10 and r.frame.empty


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: d / "missing.csv", "cannot read"),
        (lambda d: d, "cannot read"),  # a directory
        (lambda d: _write(d / "e.csv", ""), "empty file"),
        (
            lambda d: _write(d / "c.csv", "ts,tank_id,temperature_c\n"),
            "missing column.*pressure_kpa",
        ),
        (
            lambda d: _write(d / "s.csv", "ts;tank_id;pressure_kpa;temperature_c\n1;T;1;1\n"),
            "wrong separator",
        ),
        (lambda d: _write(d / "z.csv.gz", "not gzip at all"), "cannot read"),
    ],
)
def test_unreadable_input_is_one_clear_line(tmp_path: Path, setup, match: str) -> None:
    path = setup(tmp_path)
    with pytest.raises(CsvError, match=match) as info:
        load_frame(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_bad_options_are_csv_errors() -> None:
    with pytest.raises(CsvError, match="pressure unit"):
        CsvOptions(pressure_unit="atm")
    with pytest.raises(CsvError, match="time zone"):
        CsvOptions(timezone="Mars/Olympus")
    with pytest.raises(CsvError, match="time-format"):
        load_frame([Path("x.csv")], CsvOptions(time_format="dd.mm.yyyy"))
