"""docs/pipeline.md's options table states what ``tankwatch run`` really does."""

from __future__ import annotations

import dataclasses
import re

from pipeline.config import FIELDS, Settings
from tankwatch.kafka_security import KafkaSecurity
from tests.conftest import REPO


def _table() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (REPO / "docs" / "pipeline.md").read_text().splitlines():
        m = re.match(r"\| `(--[a-z-]+)` \| `([A-Z_]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def _same(doc: str, value: object) -> bool:
    doc = doc.strip("`")
    if value is None or value == "":
        return doc == "—"  # "no value": unset secrets, files, mechanism
    if isinstance(value, bool):
        return doc == str(value).lower()
    if isinstance(value, tuple):
        return doc == ",".join(map(str, value))
    if isinstance(value, (int, float)):
        try:
            return float(doc) == float(value)
        except ValueError:
            return False
    return doc == str(value)


def test_every_option_is_documented_with_its_env_and_default() -> None:
    table = _table()
    defaults = {f.name: f for f in dataclasses.fields(Settings)}
    wrong = []
    for spec in FIELDS:
        assert spec.flag in table, f"{spec.flag} missing from docs/pipeline.md"
        env, doc = table[spec.flag]
        if env != spec.env:
            wrong.append(f"{spec.flag}: docs say {env}, code reads {spec.env}")
        if spec.name in (
            "model_dir",
            "max_gap_ticks",
            "transactional_id",
            "ssl_cafile",
            "pressure_reference",
            "pressure_min_kpa",
            "pressure_max_kpa",
        ):
            continue  # described in words (installed package / from the artifact / reference)
        # The security options make Settings.security: their defaults are KafkaSecurity's.
        field = defaults.get(spec.name)
        value = field.default if field else getattr(KafkaSecurity(), spec.name)
        if not _same(doc, value):
            wrong.append(f"{spec.flag}: docs say {doc!r}, default is {value!r}")
    assert not wrong, "\n".join(wrong)
