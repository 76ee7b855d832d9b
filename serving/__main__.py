"""`python -m serving --model checkpoints/omnidrca-demo`: the OpenAI-compatible speech API on 127.0.0.1:8000."""

from __future__ import annotations

import argparse
import logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    p.add_argument("--model", required=True, help="OmniDRCA checkpoint folder or Hub id (loaded with trust_remote_code)")
    p.add_argument("--served-model-name", default=None, help="the id clients send as `model` (default: folder name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>' (or set OMNIDRCA_API_KEY)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--max-batch", type=int, default=32, help="most answers generated together; 1 = one at a time")
    p.add_argument("--max-queue", type=int, default=64, help="most requests waiting; more are answered 429")
    p.add_argument("--max-tokens", type=int, default=256, help="longest answer in 0.2 s steps")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (1 is fastest on small CPUs)")
    p.add_argument("--max-context", type=int, default=None,
                   help="most positions a conversation plus its answer may take (default: the backbone's)")
    p.add_argument("--max-audio-seconds", type=float, default=30.0, help="longest input clip")
    p.add_argument("--max-body-mb", type=float, default=25.0, help="largest request body")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import uvicorn

    from .server import build_app, websocket_implementation

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_app(args.model, served_name=args.served_model_name, api_key=args.api_key, device=args.device,
                        max_batch=args.max_batch, max_queue=args.max_queue, max_tokens=args.max_tokens,
                        timeout=args.timeout, torch_threads=args.torch_threads,
                        max_audio_seconds=args.max_audio_seconds, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                        max_context=args.max_context)
    except ValueError as error:  # a model that does not load, a bad limit: say so, without a traceback
        raise SystemExit(f"python -m serving: error: {error}") from None
    print(f"serving {app.state.config.model_name!r} on http://{args.host}:{args.port}/v1 "
          f"(max batch {args.max_batch}{', API key required' if app.state.config.api_key else ''})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws=websocket_implementation())


if __name__ == "__main__":
    main()
