"""What a command did with the CSV rows it read: one summary, and the drop limit.

Every command that reads CSV files (``replay``, ``train``, ``evaluate``, ``demo
--tanks-file``) ends with :func:`summary_lines` on stderr: rows read, used, dropped by
reason, and the first few ``file:line`` examples. Right after loading it calls
:func:`check_drops`: when more than ``limit`` of the rows were dropped, the command
stops with one line (exit 2) unless the user passed ``--allow-drops`` -- a wrong
separator, unit or pressure reference then fails loudly instead of training on a
fraction of the data.

>>> from producers.csv_source import LoadResult
>>> import pandas as pd
>>> r = LoadResult(pd.DataFrame({"ts": [0.0] * 9}), 1, ["a.csv:3: unknown event"],
...                rows_read=10, dropped={"unknown event": 1}, files=1)
>>> summary_lines(r)[0]
'csv: read 10 rows from 1 file(s); used 9; dropped 1 (10.0%): unknown event 1'
>>> check_drops(r, limit=0.2)
>>> try:
...     check_drops(r, limit=0.05)
... except Exception as exc:
...     print(exc)  # doctest: +NORMALIZE_WHITESPACE
1 of 10 CSV rows (10.0%) dropped, more than the 5% limit (unknown event 1;
first a.csv:3: unknown event); check the CSV options or pass --allow-drops
"""

from __future__ import annotations

import argparse
import os

from producers.csv_source import LoadResult
from tankwatch.errors import CsvError

__all__ = ["DEFAULT_DROP_LIMIT", "add_drop_args", "check_drops", "count_lines", "summary_lines"]

#: Share of dropped rows above which a command fails (unless ``--allow-drops``).
DEFAULT_DROP_LIMIT = 0.03
#: ``file:line`` examples in the summary.
EXAMPLES = 3


def _pct(share: float) -> str:
    """``0.4%``; a share too small for one decimal is ``<0.1%``, not ``0.0%``."""
    return "<0.1%" if 0 < share < 0.0005 else f"{share:.1%}"


def _reasons(dropped: dict[str, int]) -> str:
    items = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{reason} {count:,}" for reason, count in items)


def summary_lines(result: LoadResult, used: int | None = None, extra: str = "") -> list[str]:
    """The summary: first line counts, then up to :data:`EXAMPLES` example lines.

    ``used``: rows the command actually used, when it is less than the valid rows
    (replay's ``--start/--end``, several readings of a tank in one tick); ``extra``:
    a note for the first line.
    """
    return count_lines(
        result.rows_read,
        len(result.frame),
        result.dropped,
        result.errors,
        result.files,
        used,
        extra,
    )


def count_lines(
    rows_read: int,
    valid: int,
    dropped: dict[str, int],
    errors: list[str],
    files: int,
    used: int | None = None,
    extra: str = "",
) -> list[str]:
    """:func:`summary_lines` from plain counts (e.g. an evaluation summary's ``input``)."""
    used_n = valid if used is None else used
    bad = sum(dropped.values())
    share = bad / rows_read if rows_read else 0.0
    first = f"csv: read {rows_read:,} rows from {files} file(s); used {used_n:,}" + (
        f" of {valid:,} valid" if used_n != valid else ""
    )
    if bad:
        first += f"; dropped {bad:,} ({_pct(share)}): {_reasons(dropped)}"
    else:
        first += "; dropped 0"
    if extra:
        first += f"; {extra}"
    return [first] + [f"  e.g. {e}" for e in errors[:EXAMPLES]]


def check_drops(result: LoadResult, limit: float = DEFAULT_DROP_LIMIT, allow: bool = False) -> None:
    """Raise CsvError (one line) when more than ``limit`` of the rows read were dropped."""
    if allow or not result.rows_read:
        return
    share = result.bad_rows / result.rows_read
    if share <= limit:
        return
    first = f"; first {result.errors[0]}" if result.errors else ""
    raise CsvError(
        f"{result.bad_rows:,} of {result.rows_read:,} CSV rows ({_pct(share)}) dropped, more than "
        f"the {limit:.0%} limit ({_reasons(result.dropped)}{first}); check the CSV options or pass "
        "--allow-drops"
    )


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text}")
    return value


def add_drop_args(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--allow-drops`` and ``--drop-limit`` (read back as args.allow_drops/drop_limit)."""
    group.add_argument(
        "--allow-drops",
        action="store_true",
        default=os.environ.get("TANKWATCH_ALLOW_DROPS", "").lower() in ("1", "true", "yes", "on"),
        help="go on even when more than --drop-limit of the CSV rows are bad "
        "(env TANKWATCH_ALLOW_DROPS)",
    )
    group.add_argument(
        "--drop-limit",
        type=_share,
        default=_share(os.environ.get("TANKWATCH_DROP_LIMIT") or str(DEFAULT_DROP_LIMIT)),
        help="share of bad CSV rows that fails the command (env TANKWATCH_DROP_LIMIT; "
        f"default {DEFAULT_DROP_LIMIT:g})",
    )
