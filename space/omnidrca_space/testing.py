"""Run the Space as a visitor meets it (a separate `python space/app.py` process on a free local port) and
talk to it through `gradio_client`: shared by the tests and `benchmarks/space_load.py`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
URL_LINE = "Running on local URL:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(*args: str, timeout: float = 180.0, env: dict | None = None,
                cwd: str | Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """Start `space/app.py` on 127.0.0.1 and a free port; yield (local URL it printed, its output lines so far)."""
    port = free_port()
    cmd = [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    lines: list[str] = []
    # Drain the pipe for the app's whole life: a full pipe would block the server's logging.
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not any(URL_LINE in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Space did not start (exit code {proc.poll()}):\n{''.join(lines)[-4000:]}")
            time.sleep(0.1)
        url = next(line for line in lines if URL_LINE in line).split(URL_LINE)[1].strip()
        yield url, lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ask(client, audio: str | None = None, typed: str = "", mode: str = "Text and speech",
        task: str = "Answer my question", **sampling) -> dict:
    """One click of Ask through the page's own endpoint; the parts of the answer a visitor sees."""
    from gradio_client import handle_file

    chat, _live, wav, _plot, status = client.predict(
        audio_path=handle_file(audio) if audio else None, typed=typed, task_label=task, mode_label=mode,
        api_name="/answer", **sampling,
    )
    texts = [part["text"] for message in chat if message["role"] == "assistant"
             for part in message["content"] if part.get("type") == "text"]
    return {"chat": chat, "answer": texts[-1] if texts else "", "wav": wav, "status": status}


def run_load(url: str, audio: str, clients: int = 8, requests: int = 5, mode: str = "Text",
             expect: str | None = None) -> dict:
    """`clients` visitors (one gradio_client each, started together) each ask `requests` questions in turn.

    A request fails if it raises or (with `expect`) its answer lacks `expect`. Returns latencies in seconds
    (each request's full round trip, queueing included), failures with their reasons, wall time and throughput.
    """
    from gradio_client import Client

    latencies: list[float] = []
    failures: list[str] = []
    answers: dict[str, int] = {}
    lock = threading.Lock()
    start_together = threading.Barrier(clients)

    def visitor(index: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001 - a failed connection is a failed visitor, counted below
            with lock:
                failures.extend([f"client {index}: {error!r}"] * requests)
            start_together.abort()
            return
        try:
            start_together.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        for _ in range(requests):
            begin = time.perf_counter()
            try:
                answer = ask(client, audio, mode=mode)["answer"]
                ok = expect is None or expect in answer
                reason = None if ok else f"client {index}: unexpected answer {answer!r}"
            except Exception as error:  # noqa: BLE001
                answer, reason = "", f"client {index}: {error!r}"
            with lock:
                latencies.append(time.perf_counter() - begin)
                answers[answer] = answers.get(answer, 0) + 1
                if reason:
                    failures.append(reason)

    wall = time.perf_counter()
    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    ordered = sorted(latencies)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    return {"mode": mode, "clients": clients, "requests": clients * requests, "completed": len(latencies),
            "failures": failures, "p50_s": percentile(0.50), "p95_s": percentile(0.95),
            "max_s": max(ordered, default=0.0),
            "wall_s": wall, "throughput_rps": len(latencies) / wall, "answers": answers}


def format_load(report: dict) -> str:
    return (f"{report['clients']} clients x {report['requests'] // report['clients']} requests ({report['mode']}): "
            f"{len(report['failures'])} failures, p50 {report['p50_s']:.2f} s, p95 {report['p95_s']:.2f} s, "
            f"max {report['max_s']:.2f} s, {report['throughput_rps']:.2f} requests/s over {report['wall_s']:.1f} s")


__all__ = ["APP", "ask", "format_load", "free_port", "run_load", "running_app"]
