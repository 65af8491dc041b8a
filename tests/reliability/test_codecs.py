"""Issue 10 item 2: compressed batches.

* Producers with each codec kafka-python supports (gzip, snappy, lz4, zstd; the extras
  are dependencies now) reach every tank's forecast.
* A batch the client cannot decode (here: the codec made unavailable inside the
  pipeline process) is a clear state, not a spin: ``/healthz`` 503 naming the
  undecodable batch, ``tankwatch_undecodable_batches_total``, the other partitions'
  tanks unaffected, and SIGTERM stops the process.

(The embedded Tansu broker stores batches uncompressed, so against it the consumer
side of the first test sees plain batches; against Apache Kafka it decodes each codec.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    REPO,
    ServiceThread,
    http_get,
    pipeline_settings,
    produce_raw,
    synthetic_history,
    wait_consumed,
    wait_until,
)
from tests.reliability.support import PipelineProcess, instance_env, wait_all_applied

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_producer_with_each_codec_reaches_every_tank(
    codec: str, kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    from tankwatch.codec import encode_reading

    history = synthetic_history(n_tanks=4, n_ticks=30, seed=5)
    topics = make_topics()
    produce_raw(
        kafka_bootstrap,
        topics.readings,
        [encode_reading(r) for r in history],
        compression_type=codec,
        linger_ms=20,  # batches of many records: compression applies per batch
    )
    settings = pipeline_settings(kafka_bootstrap, topics, tmp_path / "s", model_dir=model_copy)
    with ServiceThread(settings) as run:
        wait_consumed(run.service, len(history), 60)
        stats = run.service.stats
    assert stats["consumed"] == len(history) and stats["rejected"] == {}
    assert stats["tanks"] == 4 and stats["steps"] > 0


#: Runs ``tankwatch run`` with lz4 "not installed" for batches carrying a marker: the
#: record batch decoder raises what kafka-python raises without the lz4 package.
_WRAPPER = """
import sys
import kafka.errors as ke
import kafka.record.default_records as dr

_orig = dr.DefaultRecordBatch._maybe_uncompress

def _maybe_uncompress(self):
    if b"UNDECODABLE" in bytes(self._buffer):
        raise ke.UnsupportedCodecError("Libraries for lz4 compression codec not found")
    return _orig(self)

dr.DefaultRecordBatch._maybe_uncompress = _maybe_uncompress
from tankwatch.cli import main
sys.exit(main(["--log-level", "info", "run"]))
"""


class WrappedProcess(PipelineProcess):
    def start(self) -> WrappedProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WRAPPER],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        return self


def test_an_undecodable_batch_is_a_clear_state_and_sigterm_still_stops(
    kafka_bootstrap: str, make_topics: Any, model_copy: Path, tmp_path: Path
) -> None:
    from tankwatch.codec import encode_reading

    topics = make_topics()
    history = synthetic_history(n_tanks=8, n_ticks=30, seed=9)
    from tests.reliability.test_hostile_input import _partition_of

    key = next(k for k in (f"X{i}".encode() for i in range(100)) if _partition_of(k, 4) == 0)
    produce_raw(kafka_bootstrap, topics.readings, [(key, b'{"UNDECODABLE": true}')])
    env = instance_env(
        kafka_bootstrap, topics, tmp_path / "s", f"g-{topics.readings}",
        TANKWATCH_MODEL=str(model_copy),
    )  # fmt: skip
    proc = WrappedProcess(env, tmp_path / "pipeline.log")
    try:
        proc.start()
        produce_raw(kafka_bootstrap, topics.readings, [encode_reading(r) for r in history])
        wait_until(lambda: proc.metric("tankwatch_undecodable_batches_total") >= 1, 60,
                   "undecodable batch counted")  # fmt: skip
        assert proc.metric("tankwatch_partitions_blocked") == 1
        status, body = http_get(proc.url + "/healthz", 3.0)
        health = json.loads(body)
        print(f"undecodable batch: /healthz {status} {health['reason']}")
        assert status == 503 and "undecodable batch on partition(s) 0" in health["reason"]
        assert "lz4" in health["reason"] and health["blocked_partitions"] == [0]
        # the tanks of the other partitions are unaffected
        others = [r for r in history if _partition_of(r.tank_id.encode(), 4) != 0]
        assert others
        wait_all_applied([proc], others, 60)
        assert proc.stop(timeout_s=30) == 0, proc.log_tail()  # before: only SIGKILL stopped it
    finally:
        proc.ensure_dead()
