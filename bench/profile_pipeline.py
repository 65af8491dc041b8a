"""Profile the in-process pipeline over a pre-filled topic (for py-spy / pyinstrument).

Produces ``--tanks`` x ``--ticks`` readings into a fresh topic on an embedded broker,
then runs the pipeline in-process (as ``bench/pipeline.py --parts throughput`` does)
with the forecasts topic on or off and the committed artifact (or ``--model DIR``),
printing the seconds it took. Meant to be run
under a sampling profiler, e.g.::

    py-spy record -r 250 -f raw -o /tmp/prof.txt -- \
        .venv/bin/python bench/profile_pipeline.py --forecasts on
    .venv/bin/python bench/profile_pipeline.py --pyinstrument   # loop thread only

``--pyinstrument`` profiles the pipeline's loop thread (pyinstrument samples the thread
it is started in) and prints its call tree; py-spy sees every thread, the producer's
and consumer's IO threads included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fleet_values, produce  # noqa: E402
from bench.pipeline import new_topics, pipeline_inprocess  # noqa: E402
from tankwatch.broker import EmbeddedBroker  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tanks", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--forecasts", choices=["on", "off"], default="on")
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--horizon-stride", type=int, default=1)
    parser.add_argument("--horizon-worker", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: committed)")
    args = parser.parse_args()

    from models.artifact import load_artifact
    from pipeline.config import default_model_dir

    model_dir = args.model or default_model_dir()
    interval = load_artifact(model_dir).tick_interval_s
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        topics = new_topics(broker.bootstrap, "prof")
        total, _ = produce(
            broker.bootstrap, topics.readings, fleet_values(args.tanks, args.ticks, interval)
        )
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            # Profile the loop thread: wrap Service.run so the profiler starts inside it.
            from pipeline.service import Service

            run = Service.run

            def profiled_run(self: Service, stop: threading.Event | None = None) -> None:
                nonlocal profiler
                profiler = Profiler(interval=0.001)
                profiler.start()
                try:
                    run(self, stop)
                finally:
                    profiler.stop()

            Service.run = profiled_run  # type: ignore[method-assign]
        t0 = time.perf_counter()
        r = pipeline_inprocess(
            broker.bootstrap,
            topics,
            total,
            args.forecasts == "on",
            model_dir,
            Path(tmp),
            args.horizon,
            horizon_stride=args.horizon_stride,
            horizon_worker=args.horizon_worker,
        )
        print(f"{total:,} readings: {r} ({time.perf_counter() - t0:.1f} s with setup)")
        if profiler is not None:
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
