"""The same OpenAI-compatible server scaled out on Ray Serve: one engine per replica, requests spread over them.

Locally, from the repository root (`pip install -e '.[ray]'`):

    serve run serving.ray_serve:app_builder model=checkpoints/omnidrca-demo num_replicas=2
    serve run serving/serve_config.yaml          # the same, from a config file

Clients use http://127.0.0.1:8000/v1 exactly as with `python -m serving`. On a cluster (`ray start --head` on one
machine, `ray start --address=<head>:6379` on the others, each with this package installed and the checkpoint at the
same path, or a Hub id): `serve deploy serving/serve_config.yaml --address http://<head>:8265`, then `serve status`.
Each replica builds the app of `serving.server.build_app` (it loads the model once), and Ray runs the app's lifespan
in that replica, which starts its engine thread; Ray's proxy forwards every route (SSE streams included) to one of
them. Every response names the replica that made it in `x-omnidrca-replica`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

REPLICA_HEADER = "x-omnidrca-replica"


class ServeArgs(BaseModel):
    """The arguments of `app_builder` (strings from `serve run ... key=value` are converted)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    served_model_name: str | None = None
    api_key: str | None = None  # None: each replica reads $OMNIDRCA_API_KEY (set it in runtime_env.env_vars)
    device: str | None = None
    max_batch: int = Field(32, ge=1)
    max_queue: int = Field(64, ge=1)
    max_tokens: int = Field(256, ge=1)
    timeout: float = Field(120.0, gt=0)
    torch_threads: int = Field(1, ge=1)
    max_audio_seconds: float = Field(30.0, gt=0)
    max_body_mb: float = Field(25.0, gt=0)
    # Scaling: a fixed `num_replicas`, or autoscaling between `min_replicas` and `max_replicas` (either one given,
    # or num_replicas="auto") aiming at `target_ongoing_requests` per replica (default: a full batch).
    num_replicas: int | Literal["auto"] = 1
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float | None = Field(None, gt=0)
    num_cpus: float = Field(1.0, ge=0)  # per replica; keep it equal to torch_threads on a CPU
    num_gpus: float = Field(0.0, ge=0)
    name: str = "OmniDRCA"  # the deployment's name

    def build_kwargs(self) -> dict[str, Any]:
        return {"served_name": self.served_model_name, "api_key": self.api_key, "device": self.device,
                "max_batch": self.max_batch, "max_queue": self.max_queue, "max_tokens": self.max_tokens,
                "timeout": self.timeout, "torch_threads": self.torch_threads,
                "max_audio_seconds": self.max_audio_seconds, "max_body_bytes": int(self.max_body_mb * 1024 * 1024)}

    def scaling(self) -> dict[str, Any]:
        """`num_replicas` or `autoscaling_config` for `Deployment.options`."""
        autoscale = self.num_replicas == "auto" or self.min_replicas is not None or self.max_replicas is not None
        if not autoscale:
            if self.num_replicas < 1:
                raise ValueError(f"num_replicas must be at least 1 (or 'auto'), got {self.num_replicas}.")
            return {"num_replicas": self.num_replicas}
        low = self.min_replicas if self.min_replicas is not None else 1
        high = self.max_replicas if self.max_replicas is not None else max(low, 1)
        if high < low:
            raise ValueError(f"max_replicas ({high}) must be at least min_replicas ({low}).")
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                       "target_ongoing_requests": self.target_ongoing_requests or self.max_batch}}


class _ReplicaHeader:
    """ASGI middleware: every HTTP response says which replica made it (load-balancing checks, debugging)."""

    def __init__(self, app, replica: str):
        self.app, self.replica = app, replica.encode("latin-1")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_replica(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(),
                                                                                 self.replica)]}
            await send(message)

        await self.app(scope, receive, send_with_replica)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32 + 64)
@serve.ingress()
class OmniDRCAServer:
    """One replica: the app of `build_app(model, **build_kwargs)`, built (and its model loaded) in the replica.

    `serve.ingress()` without an app defers the app to `__serve_build_asgi_app__`, which Ray calls after
    `__init__` in the replica; Ray then runs the app's lifespan (the engine thread starts) before the replica takes
    requests, and its shutdown (the engine stops) when the replica goes away.
    """

    def __init__(self, model: str, build_kwargs: dict[str, Any] | None = None):
        self.model, self.build_kwargs = model, dict(build_kwargs or {})
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.engine = None

    def __serve_build_asgi_app__(self):
        from .server import build_app

        app = build_app(self.model, **self.build_kwargs)
        app.add_middleware(_ReplicaHeader, replica=self.replica)
        self.engine = app.state.engine
        return app

    def check_health(self) -> None:
        """Ray restarts a replica whose engine thread died (every request to it would fail)."""
        if self.engine is not None and not self.engine.running:
            raise RuntimeError(f"The engine of replica {self.replica} is not running.")

    def engine_stats(self) -> dict[str, Any]:
        """This replica's id and engine counters (through a deployment handle)."""
        return {"replica": self.replica, **(self.engine.stats() if self.engine is not None else {})}


def resolve_model(model: str) -> str:
    """A local checkpoint folder as an absolute path (replicas need not share the driver's working directory);
    anything else (a Hub id, a path on the cluster's nodes) unchanged."""
    path = Path(os.path.expanduser(model))
    return str(path.resolve()) if path.exists() else model


def app_builder(args: dict):
    """`serve run serving.ray_serve:app_builder model=... [num_replicas=2 | min_replicas=1 max_replicas=4] ...`:
    the Serve application of `ServeArgs(**args)`."""
    settings = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(dict(args))
    deployment = OmniDRCAServer.options(
        name=settings.name,
        # Each replica admits a full batch plus its queue; Ray holds any more in its proxies until one frees up.
        max_ongoing_requests=settings.max_batch + settings.max_queue,
        ray_actor_options={"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
        **settings.scaling(),
    )
    return deployment.bind(resolve_model(settings.model), settings.build_kwargs())


__all__ = ["REPLICA_HEADER", "OmniDRCAServer", "ServeArgs", "app_builder", "resolve_model"]
