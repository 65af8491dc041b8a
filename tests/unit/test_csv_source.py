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


# --- issue 15: real archives ---------------------------------------------------------

PLANT = "Zeit;Druck;Temp\n"
PLANT_OPTS = dict(
    sep=";",
    decimal=",",
    time_col="Zeit",
    time_format="%d.%m.%Y %H:%M:%S",
    pressure_col="Druck",
    temperature_col="Temp",
    event_col=None,
    tank_from_filename=True,
)


def test_decimal_comma_and_gauge_pressure_below_zero(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "T1.csv",
        PLANT
        + "01.03.2024 00:00:00;-0,012;21,5\n"  # vacuum: -1.2 kPa gauge
        + "01.03.2024 00:00:01;0,034;21,25\n"
        + "01.03.2024 00:00:02;1.5;21,0\n",  # a dot with --decimal ',' is not a number
    )
    gauge = load_frame(p, CsvOptions(**PLANT_OPTS, pressure_unit="bar", pressure_reference="gauge"))
    assert gauge.frame["pressure_kpa"].tolist() == pytest.approx([-1.2, 3.4])
    assert gauge.frame["temperature_c"].tolist() == [21.5, 21.25]
    assert gauge.rows_read == 3 and gauge.dropped == {"pressure in 'Druck' is not a number": 1}
    # The same file declared absolute: the vacuum reading is implausible.
    absolute = load_frame(p, CsvOptions(**PLANT_OPTS, pressure_unit="bar"))
    assert len(absolute.frame) == 1
    assert absolute.dropped["pressure outside 0..5000 kPa (absolute)"] == 1
    # Limits are configurable: a high-pressure line reads with a raised maximum.
    tight = load_frame(
        p,
        CsvOptions(
            **PLANT_OPTS, pressure_unit="bar", pressure_reference="gauge", pressure_min_kpa=-1.0
        ),
    )
    assert tight.dropped["pressure outside -1..5000 kPa (gauge)"] == 1
    with pytest.raises(CsvError, match="decimal mark and the separator"):
        CsvOptions(decimal=",")
    with pytest.raises(CsvError, match="absolute or gauge"):
        CsvOptions(pressure_reference="relative")


def test_repeated_file_names_get_tank_ids_from_their_folders(tmp_path: Path) -> None:
    files = []
    for folder in ("valve1", "valve2", "deep/pump"):
        path = tmp_path / "export" / folder / "0.csv"
        path.parent.mkdir(parents=True)
        files.append(_write(path, PLANT + "01.03.2024 00:00:00;101,3;20,0\n"))
    r = load_frame(files, CsvOptions(**PLANT_OPTS))
    assert sorted(r.frame["tank_id"]) == ["deep-pump-0", "valve1-0", "valve2-0"]
    # Unique names keep the plain name; a template picks the parts.
    alone = load_frame(files[:1], CsvOptions(**PLANT_OPTS))
    assert alone.frame["tank_id"].tolist() == ["0"]
    tpl = load_frame(files, CsvOptions(**PLANT_OPTS, tank_id_template="site-{parent}.{stem}"))
    assert sorted(tpl.frame["tank_id"]) == ["site-pump.0", "site-valve1.0", "site-valve2.0"]
    # A template that loses the folder: one line naming both files.
    with pytest.raises(CsvError) as info:
        load_frame(files, CsvOptions(**PLANT_OPTS, tank_id_template="{stem}"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("tank id collision")
    assert str(files[0]) in message and str(files[1]) in message
    # The same file twice is a collision too.
    with pytest.raises(CsvError, match="tank id collision"):
        load_frame([files[0], files[0]], CsvOptions(**PLANT_OPTS))
    with pytest.raises(CsvError, match="tank-id-template"):
        CsvOptions(tank_id_template="{nope}")


def test_summary_and_drop_limit(tmp_path: Path) -> None:
    from producers.csv_report import check_drops, summary_lines

    rows = "".join(f"2024-03-01T00:{m:02d}:00Z,T01,101.3,14.0,\n" for m in range(40))
    p = _write(tmp_path / "a.csv", HEADER + rows + "garbage,T01,1,1,\n" + "x,T01,1,1,\n")
    r = load_frame(p)
    lines = summary_lines(r)
    assert lines[0] == (
        "csv: read 42 rows from 1 file(s); used 40; dropped 2 (4.8%): "
        "cannot parse time in column 'ts' 2"
    )
    assert lines[1] == f"  e.g. {p}:42: cannot parse time in column 'ts'"
    check_drops(r, limit=0.05)
    check_drops(r, limit=0.03, allow=True)
    with pytest.raises(CsvError) as info:
        check_drops(r, limit=0.03)
    assert "\n" not in str(info.value) and "--allow-drops" in str(info.value)
