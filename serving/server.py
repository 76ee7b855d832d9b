"""Build the server from a model folder or Hub id, and run it (`python -m serving`) or keep it in a thread (tests,
benchmarks).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from .engine import Engine
from .protocol import ServerConfig

API_KEY_ENV = "OMNIDRCA_API_KEY"


def load_model(name_or_path: str, device: str | None = None):
    """(model, processor) of an OmniDRCA checkpoint. `trust_remote_code` is on because the operator named this
    model on the command line; clients can never make the server load anything else."""
    import torch
    from transformers import AutoModel, AutoProcessor

    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.parent != Path(".")
    if looks_local and not path.exists():
        raise ValueError(f"--model {name_or_path!r} does not exist: expected an OmniDRCA checkpoint folder (or a Hub "
                         "id like owner/name). Try --model checkpoints/omnidrca-demo.")
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=True)
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"Could not load an OmniDRCA checkpoint from {name_or_path!r}: {error}. Expected a folder "
                         "(or Hub id) with config.json, model.safetensors and the processor files.") from error
    if not hasattr(model, "start_session"):
        raise ValueError(f"{name_or_path!r} loaded as {type(model).__name__}, not an OmniDRCA model.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval().requires_grad_(False)
    return model, processor


def build_app(model: str, *, served_name: str | None = None, api_key: str | None = None, device: str | None = None,
              max_batch: int = 32, max_queue: int = 64, max_tokens: int = 256, timeout: float = 120.0,
              torch_threads: int | None = 1, max_audio_seconds: float = 30.0,
              max_body_bytes: int = 25 * 1024 * 1024, max_context: int | None = None):
    """The FastAPI app serving `model` (its engine starts when the app does). `api_key` falls back to
    $OMNIDRCA_API_KEY; without either the server is open."""
    from .app import create_app

    network, processor = load_model(model, device)
    engine = Engine(network, processor, max_batch=max_batch, max_queue=max_queue, max_new_tokens=max_tokens,
                    timeout=timeout, torch_threads=torch_threads, max_context=max_context)
    config = ServerConfig(model_name=served_name or Path(model).name or str(model),
                          api_key=api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None,
                          max_body_bytes=max_body_bytes, max_audio_seconds=max_audio_seconds, max_tokens=max_tokens,
                          created=int(time.time()))
    return create_app(engine, config)


def websocket_implementation() -> str:
    """uvicorn's websockets implementation on the `websockets` library's current API where uvicorn has it
    (0.35+); older uvicorn runs its implementation on the library's legacy API."""
    import importlib.util

    found = importlib.util.find_spec("uvicorn.protocols.websockets.websockets_sansio_impl")
    return "websockets-sansio" if found is not None else "auto"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """A uvicorn server on a free loopback port in a background thread: `with ServerThread(app) as url: ...`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    ws=websocket_implementation(), lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="omnidrca-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The server did not start; see the log above.")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


__all__ = ["API_KEY_ENV", "ServerThread", "build_app", "free_port", "load_model", "websocket_implementation"]
