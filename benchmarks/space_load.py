"""The Space under load: per-request latency of one visitor, then concurrent visitors, in both answer modes.

    python benchmarks/space_load.py [--clients 8] [--requests 5] [--single 10] [--threads 1] [--concurrency 16] \
        [--model checkpoints/omnidrca-demo]
    python benchmarks/space_load.py --url http://127.0.0.1:7860/      # an app that is already running

Without `--url` it starts `python space/app.py` on a free port, with `--model` (default the small demo, whose
figures space/README.md gives; the Space's own default is checkpoints/omnidrca-smollm2) and `--threads` /
`--concurrency` as the app's (defaults 1 torch thread, 16 visitors answered at once). Every request goes through
gradio_client and the page's `/answer` endpoint with the bundled question "what is seven plus twelve"; a request
fails if it errors or its answer is not "seven plus twelve is nineteen" (both models answer it). Latency = the client's whole round trip (upload, queue, streamed answer,
result); "server" = the handler's own time from the page's status line. The clients run on the same
machine as the server (they take CPU too), and the machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout first: this script's own folder holds benchmarks/serving.py, which would shadow the `serving`
# package the Space's engine comes from.
sys.path[:0] = [str(ROOT), str(ROOT / "space")]

from omnidrca_space.testing import ask, format_load, run_load, running_app

QUESTION = ROOT / "checkpoints" / "omnidrca-demo" / "examples" / "seven_plus_twelve.wav"
EXPECT = "seven plus twelve is nineteen"
MODES = ("Text", "Text and speech")


def single_visitor(url: str, mode: str, runs: int) -> dict:
    """Median round trip, server time and time to first audio of `runs` requests one after another."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    ask(client, str(QUESTION), mode=mode)  # warm-up
    trips, server, first_audio = [], [], []
    for _ in range(runs):
        begin = time.perf_counter()
        result = ask(client, str(QUESTION), mode=mode)
        trips.append(time.perf_counter() - begin)
        assert EXPECT in result["answer"], result["answer"]
        server.append(float(re.search(r"answered in ([\d.]+) s", result["status"]).group(1)))
        found = re.search(r"first audio after ([\d.]+) s", result["status"])
        if found:
            first_audio.append(float(found.group(1)))
    return {"mode": mode, "round_trip_s": statistics.median(trips), "server_s": statistics.median(server),
            "first_audio_s": statistics.median(first_audio) if first_audio else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running Space (default: start space/app.py here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--single", type=int, default=10, help="sequential requests for the one-visitor latency")
    parser.add_argument("--threads", type=int, default=1, help="the started app's torch threads")
    parser.add_argument("--concurrency", type=int, default=16, help="the started app's visitors answered at once")
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "omnidrca-demo"),
                        help="the started app's model (default: the small demo)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    started = time.perf_counter()
    app_args = ("--model", args.model, "--threads", str(args.threads), "--concurrency", str(args.concurrency))
    with (nullcontext((args.url, [])) if args.url else running_app(*app_args)) as (url, _):
        print(f"Space at {url} (ready after {time.perf_counter() - started:.1f} s)")
        singles = [single_visitor(url, mode, args.single) for mode in MODES]
        loads = [run_load(url, str(QUESTION), args.clients, args.requests, mode, expect=EXPECT) for mode in MODES]

    print("\nOne visitor, requests one after another (medians):\n")
    print("| answer in | round trip (s) | server (s) | first audio (s) |")
    print("|---|---:|---:|---:|")
    for s in singles:
        first = "-" if s["first_audio_s"] is None else f"{s['first_audio_s']:.2f}"
        print(f"| {s['mode']} | {s['round_trip_s']:.2f} | {s['server_s']:.2f} | {first} |")
    print(f"\n{args.clients} visitors at once, {args.requests} requests each:\n")
    print("| answer in | requests | failures | p50 (s) | p95 (s) | max (s) | throughput (requests/s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in loads:
        print(f"| {r['mode']} | {r['requests']} | {len(r['failures'])} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
              f"{r['max_s']:.2f} | {r['throughput_rps']:.2f} |")
    for r in loads:
        print(format_load(r))
        for failure in r["failures"][:5]:
            print("  failure:", failure)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"single": singles, "load": loads}, indent=2))


if __name__ == "__main__":
    main()
