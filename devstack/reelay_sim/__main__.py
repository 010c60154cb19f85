"""``python -m reelay_sim [--host H] [--port P]``: run the simulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from reelay_sim.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    """Start a simulator, print its base URLs and keys, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m reelay_sim", description="Run the reelay provider simulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8766, help="port to bind, 0 for any free one (default 8766)")
    parser.add_argument(
        "--generation-seconds", type=float, default=None, help="generation time of every protocol's tasks"
    )
    args = parser.parse_args(argv)

    sim = Simulator(host=args.host, port=args.port).start()
    if args.generation_seconds is not None:
        sim.configure("all", generation_seconds=args.generation_seconds)
    print(f"reelay_sim serving on {sim.url}  (state: {sim.url}/_sim/state)")
    for protocol, base in sim.base_urls.items():
        print(f"  {protocol:<14} base_url={base}  api_key={sim.api_keys[protocol]}")
    print("Ctrl-C to stop.", flush=True)

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
