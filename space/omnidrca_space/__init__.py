"""The OmniDRCA Gradio Space as importable pieces: `build_demo` (the page), the answer path and the helpers
tests and benchmarks share (`launch_app`, `run_load`). `space/app.py` is the entry point."""

from .audio import InputProblem, ffmpeg_bin_dir, find_ffmpeg, load_question
from .chat import MODES, TASKS, Sampling, build_conversation, stream_answer, user_turn
from .models import DEFAULT_MODEL, FALLBACK_MODEL, LoadedModel, ModelRegistry, find_checkpoints, model_choices
from .ui import build_demo, make_respond

__all__ = [
    "DEFAULT_MODEL", "FALLBACK_MODEL", "MODES", "TASKS", "InputProblem", "LoadedModel", "ModelRegistry", "Sampling",
    "build_conversation", "build_demo", "ffmpeg_bin_dir", "find_checkpoints", "find_ffmpeg", "load_question",
    "make_respond", "model_choices", "stream_answer", "user_turn",
]
