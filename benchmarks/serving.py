"""The OpenAI-compatible server under load: continuous batching vs one request at a time, over real HTTP.

    python benchmarks/serving.py [--clients 1 4 16 32] [--requests-per-client 4] [--max-batch 32] [--json PATH]

Starts the server (`python -m serving`, in its own process as deployed: one uvicorn thread + the engine thread +
the request-preparing worker) twice with the demo checkpoint: `max_batch=--max-batch` (continuous batching) and `max_batch=1` (one at a time, same
code otherwise), each built once and reused for every level. Per server, output kind (text; text+speech as
streamed pcm16) and number of clients, the clients (asyncio + httpx, one task each) send
`--requests-per-client` streamed chat completions back-to-back, each a spoken question from the demo's
`examples/*.wav` (round-robin, greedy). Latency = request sent -> `[DONE]`; first text / first audio = request
sent -> the first SSE chunk with `delta.content` / `delta.audio.data`. A failure is an HTTP error, an error
chunk, or an empty answer (no text, or no audio when speech was asked for). Requests/s = completed requests /
wall time of the level. The clients share the machine's cores with the server, not its interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from serving.server import free_port  # noqa: E402

MODEL = ROOT / "checkpoints" / "omnidrca-demo"
KINDS = {"text": ["text"], "text+speech": ["text", "audio"]}


@dataclass
class Sample:
    """One request's timings (seconds from sending it) and outcome."""

    latency: float
    first_text: float | None = None
    first_audio: float | None = None
    error: str | None = None


@dataclass
class Level:
    server: str
    kind: str
    clients: int
    requests: int
    failures: int
    wall_s: float
    rps: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    first_text_p50_s: float | None
    first_text_p95_s: float | None
    first_audio_p50_s: float | None
    first_audio_p95_s: float | None
    errors: list[str] = field(default_factory=list)


def questions(folder: Path) -> list[str]:
    """The demo's spoken questions as base64 wav."""
    return [base64.b64encode(p.read_bytes()).decode() for p in sorted((folder / "examples").glob("*.wav"))]


def chat_body(model: str, wav_b64: str, kind: str) -> dict:
    body = {"model": model, "stream": True, "modalities": KINDS[kind],
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": wav_b64, "format": "wav"}}]}]}
    if kind == "text+speech":
        body["audio"] = {"voice": "alloy", "format": "pcm16"}
    return body


async def one_request(client, body: dict) -> Sample:
    """Send one streamed chat completion and time its chunks."""
    import httpx

    start = time.perf_counter()
    sample, text, audio_bytes = Sample(0.0), [], 0
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk, now = json.loads(line[6:]), time.perf_counter() - start
                    if "error" in chunk:
                        sample.error = f"error chunk: {chunk['error'].get('message')}"
                        continue
                    delta = chunk["choices"][0]["delta"] if chunk.get("choices") else {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        sample.first_text = sample.first_text or now
                    if (delta.get("audio") or {}).get("data"):
                        audio_bytes += len(delta["audio"]["data"])
                        sample.first_audio = sample.first_audio or now
    except httpx.HTTPError as error:
        sample.error = f"{type(error).__name__}: {error}"
    sample.latency = time.perf_counter() - start
    if sample.error is None and not "".join(text).strip():
        sample.error = "empty text answer"
    if sample.error is None and "audio" in body["modalities"] and not audio_bytes:
        sample.error = "no audio in the answer"
    return sample


async def client_task(client, bodies: list[dict], first: int, count: int) -> list[Sample]:
    return [await one_request(client, bodies[(first + i) % len(bodies)]) for i in range(count)]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def run_level(url: str, server: str, kind: str, clients: int, per_client: int, bodies: list[dict]) -> Level:
    """`clients` concurrent clients, `per_client` requests each; the level's figures."""
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(client_task(client, bodies, c, per_client) for c in range(clients)))
        wall = time.perf_counter() - start
    samples = [s for batch in results for s in batch]
    good = [s for s in samples if s.error is None]
    errors = [s.error for s in samples if s.error is not None]
    return Level(server, kind, clients, len(samples), len(errors), wall, len(good) / wall,
                 pct([s.latency for s in good], 50), pct([s.latency for s in good], 95),
                 pct([s.first_text for s in good if s.first_text is not None], 50),
                 pct([s.first_text for s in good if s.first_text is not None], 95),
                 pct([s.first_audio for s in good if s.first_audio is not None], 50),
                 pct([s.first_audio for s in good if s.first_audio is not None], 95), errors[:5])


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    """`python -m serving` in its own process (as deployed: the clients do not share its interpreter)."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "serving", "--model", str(args.model), "--port", str(port), "--log-level", "warning",
           "--max-batch", str(max_batch), "--max-queue", str(max(64, 2 * max(args.clients))),
           "--torch-threads", str(args.threads)] + (["--device", args.device] if args.device else [])
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start within 300 s")


def bench_server(args: argparse.Namespace, name: str, max_batch: int, wavs: list[str]) -> tuple[list[Level], dict]:
    """Start one server, warm it up, and run every kind x clients level against it."""
    import httpx

    server, url = start_server(args, max_batch)
    served = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
    levels = []
    try:
        for kind in KINDS:  # warm-up: one request of each kind
            warm = asyncio.run(run_level(url, name, kind, 1, 1, [chat_body(served, wavs[0], kind)]))
            if warm.failures:
                raise RuntimeError(f"warm-up failed on {name} ({kind}): {warm.errors}")
        for kind in KINDS:
            bodies = [chat_body(served, w, kind) for w in wavs]
            for clients in args.clients:
                level = asyncio.run(run_level(url, name, kind, clients, args.requests_per_client, bodies))
                print(f"  {name} {kind} {clients} clients: {level.rps:.2f} req/s, {level.failures} failures",
                      file=sys.stderr, flush=True)
                levels.append(level)
        health = httpx.get(f"{url}/health", timeout=30).json()
    finally:
        server.terminate()
        server.wait(30)
    return levels, health


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(levels: list[Level]) -> None:
    print("| server | output | clients | requests | failures | requests/s | latency p50 / p95 (s) | "
          "first text p50 / p95 (s) | first audio p50 / p95 (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for x in levels:
        print(f"| {x.server} | {x.kind} | {x.clients} | {x.requests} | {x.failures} | {x.rps:.2f} | "
              f"{fmt(x.latency_p50_s)} / {fmt(x.latency_p95_s)} | {fmt(x.first_text_p50_s)} / "
              f"{fmt(x.first_text_p95_s)} | {fmt(x.first_audio_p50_s)} / {fmt(x.first_audio_p95_s)} |")
    for x in levels:
        for error in x.errors:
            print(f"- failure ({x.server}, {x.kind}, {x.clients} clients): {error}")


def headline(levels: list[Level], clients: int = 16) -> dict:
    """Batching vs one at a time at `clients` clients (text+speech): throughput ratio and p95 first audio
    against the 1-client figure (targets: >= 4x and <= 2x)."""
    get = {(x.server, x.kind, x.clients): x for x in levels}
    batch, single = get.get(("batching", "text+speech", clients)), get.get(("one-at-a-time", "text+speech", clients))
    alone = get.get(("batching", "text+speech", 1))
    out: dict = {}
    if batch and single and single.rps:
        out["throughput_speedup"] = batch.rps / single.rps
        print(f"\nthroughput at {clients} clients, text+speech: batching {batch.rps:.2f} req/s vs one at a time "
              f"{single.rps:.2f} req/s = {out['throughput_speedup']:.2f}x (target >= 4x)")
    if batch and alone and batch.first_audio_p95_s and alone.first_audio_p95_s:
        out["first_audio_p95_ratio"] = batch.first_audio_p95_s / alone.first_audio_p95_s
        print(f"p95 first audio with batching: {batch.first_audio_p95_s:.2f} s at {clients} clients vs "
              f"{alone.first_audio_p95_s:.2f} s at 1 client = {out['first_audio_p95_ratio']:.2f}x (target <= 2x)")
    if not out:
        print(f"\n(no headline: needs --clients 1 and {clients} and both servers)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=32, help="the batching server's max_batch")
    parser.add_argument("--servers", nargs="+", default=["batching", "one-at-a-time"],
                        choices=["batching", "one-at-a-time"])
    parser.add_argument("--threads", type=int, default=1, help="the engine's torch threads")
    parser.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda when available)")
    parser.add_argument("--json", help="also write all figures to this file")
    args = parser.parse_args()

    facts = {"torch": torch.__version__, "engine_torch_threads": args.threads, "cpus": os.cpu_count(),
             "load_average_before": os.getloadavg(), "device": args.device}
    print(f"torch {torch.__version__}, engine torch threads {args.threads}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    wavs = questions(args.model)
    levels, health = [], {}
    for name in args.servers:
        found, health[name] = bench_server(args, name, args.max_batch if name == "batching" else 1, wavs)
        levels += found
    print(f"\n{args.requests_per_client} requests per client; engine stats after the run: "
          + "; ".join(f"{k}: largest batch {h['largest_batch']}, {h['steps']} steps" for k, h in health.items()) + "\n")
    print_table(levels)
    ratios = headline(levels)
    facts["load_average_after"] = os.getloadavg()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "args": {**vars(args), "model": str(args.model)},
                                               "levels": [asdict(x) for x in levels], "engine": health,
                                               "headline": ratios}, indent=2))


if __name__ == "__main__":
    main()
