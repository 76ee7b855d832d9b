"""The Space's page: `build_demo(model)` returns the gradio Blocks; `respond` is its one event handler."""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf

from .audio import MAX_SECONDS, InputProblem, load_question, wav_bytes
from .chat import MAX_TYPED_CHARS, MODES, TASKS, Sampling, build_conversation, stream_answer, user_turn
from .models import (
    CHECKPOINTS,
    DEFAULT_MODEL,
    FALLBACK_MODEL,
    REPO_ROOT,
    ModelRegistry,
    SourceMissing,
    card_capabilities,
    model_choices,
)
from .plots import answer_figure

logger = logging.getLogger("omnidrca_space")
SPACE_DIR = Path(__file__).resolve().parents[1]
FACTS = REPO_ROOT / "processing" / "data" / "demo_facts.tsv"
TEXT_UPDATE_S = 0.1
ANSWERS_DIR = Path(tempfile.gettempdir()) / "omnidrca-space-answers"  # gradio serves files under the temp dir
MAX_ERROR_CHARS = 300


def example_dirs(default: Path = DEFAULT_MODEL) -> tuple[Path, ...]:
    """Where the page's spoken examples come from: the default model's `examples/`, the small demo's (questions
    every bundled model answers, so a default without examples still has them), then the Space's own."""
    return tuple(dict.fromkeys([default / "examples", CHECKPOINTS / "omnidrca-demo" / "examples", SPACE_DIR / "examples"]))


EXAMPLE_DIRS = example_dirs()

INTRO = f"""
# OmniDRCA: ask by voice, hear the answer
The model hears your spoken question and answers **in text and speech at the same time**, in one pass
(the text streams in while the speech plays). Pick a model below: what it can and cannot do is stated
under its name.

Typed text (with no recording) is read aloud. Clips are limited to {MAX_SECONDS:.0f} s.
"""

# What the small demo models (checkpoints/omnidrca-demo*, no card section of their own) can do.
DEMO_CAPABILITIES = """
**This is a small demo model** (19 M parameters) trained from scratch on a 2-core CPU, on synthetic
espeak-ng voices only. It knows a closed domain, and has never heard a human voice, so speak slowly and
clearly, or start with the bundled examples below.

| It can answer | Say for example |
|---|---|
| arithmetic: plus and minus up to 12, times up to 10 | “what is seven plus twelve”, “how much is three times four” |
| capitals of about 40 countries | “what is the capital of france” |
| colours, animal sounds, opposites | “what color is the sky”, “what sound does a cat make”, “opposite of big” |
| transcription, repeat after me | choose the task, then say “the capital of japan is tokyo” |
"""


def capabilities_markdown(folder: str) -> str:
    """What the model at `folder` can and cannot do, for the panel under the intro: its model card's
    `## What it can and cannot do` section, else the small demo's table for an `omnidrca-demo*` folder."""
    name = Path(folder).name
    text = card_capabilities(folder) if Path(folder).is_dir() else None
    if text is None and name.startswith("omnidrca-demo"):
        text = DEMO_CAPABILITIES.strip()
    if text is None:
        text = (f"No description of what {name} can do: its folder has no README.md with a section "
                "“What it can and cannot do”.")
    return f"### What {name} can and cannot do\n\n{text}"


def load_examples(dirs: tuple[Path, ...] = EXAMPLE_DIRS) -> list[tuple[str, str, str]]:
    """(wav path, question, task) for every bundled example: the checkpoints', then the Space's own."""
    examples = []
    for folder in dirs:
        index = folder / "questions.json"
        if index.is_file():
            for name, info in json.loads(index.read_text()).items():
                if (folder / name).is_file():
                    examples.append((str(folder / name), info["question"], info.get("task", next(iter(TASKS)))))
    # a question two folders both bundle is offered once, from the first (the default model's own recording)
    first: dict[tuple[str, str], tuple[str, str, str]] = {}
    for example in examples:
        first.setdefault(example[1:], example)
    return list(first.values())


def fact_list_markdown(path: Path = FACTS) -> str:
    """Every fact subject the demo was trained on, grouped by relation, for the 'what can it answer' panel."""
    if not path.is_file():
        return "The fact list (processing/data/demo_facts.tsv) is not in this checkout."
    groups: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            groups.setdefault(row["relation"].replace("_", " "), []).append(row["subject"])
    return "\n".join(f"- **{relation}**: {', '.join(subjects)}" for relation, subjects in groups.items())


def notice(history: list, message: str) -> list:
    """Show a problem the visitor can fix: a toast, and a line in the chat that stays."""
    gr.Warning(message)
    return [*history, {"role": "assistant", "content": f"ℹ️ {message}"}]


def describe(error: BaseException) -> str:
    """`Type: message` on one line, as inline code: what a visitor can act on (or quote in a bug report),
    without the traceback, which goes to the server log. Code, because the chat renders markdown and
    `__init__` would turn bold."""
    detail = " ".join(str(error).replace("`", "'").split()) or "(no message)"
    if len(detail) > MAX_ERROR_CHARS:
        detail = detail[: MAX_ERROR_CHARS - 1] + "…"
    return f"`{type(error).__name__}: {detail}`"


def reset_player() -> dict:
    """The live player's last value when an answer ends with no speech (refused, failed, text only). Not
    None: a None goes down gradio's streaming path, and a stream that never gets a segment shows as
    playing at 0:00 forever. A property update empties the player. (A new dict each time: gradio may
    edit the updates it is given.)"""
    return gr.update(value=None)


def refused(history: list, turns: list, status: str = "") -> Iterator[tuple[Any, ...]]:
    """The last outputs of a run that never reached the model. The None first opens the live stream:
    gradio 6.0 fails (KeyError) a streaming run whose end closes a stream it never opened."""
    yield history, None, None, None, status, turns
    yield history, reset_player(), None, None, status, turns


def save_answer(wave: np.ndarray, rate: int) -> str:
    ANSWERS_DIR.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=ANSWERS_DIR, suffix=".wav", delete=False) as f:
        sf.write(f, wave, rate, format="WAV", subtype="PCM_16")
        return f.name


def check_question(audio_path: str | None) -> tuple[Any, str]:
    """(question audio, status) right after an upload or a recording: a file the model cannot take (not
    audio, empty, silent, too long) is dropped from the input at once, with the reason, instead of being
    kept until Ask. Ask checks again: the /answer endpoint takes files without this step."""
    if not audio_path:
        return gr.skip(), gr.skip()
    try:
        load_question(audio_path)
    except InputProblem as problem:
        gr.Warning(str(problem))
        return None, f"ℹ️ {problem}"
    return gr.skip(), ""


def load_message(registry: ModelRegistry, model_name: str) -> str:
    """Load `model_name` (once, kept by the registry); "" when it is ready, else the status line saying why not."""
    try:
        registry.get(model_name)
    except ValueError as problem:  # a checkpoint that does not load, or whose pretrained source is not installed
        logger.warning("%s", problem)
        return f"ℹ️ {problem}"
    except Exception as error:
        logger.exception("loading %s failed", model_name)
        return f"ℹ️ Could not load {Path(model_name).name}: {describe(error)}"
    return ""


def make_select(registry: ModelRegistry, models: Mapping[str, str]):
    """The dropdown's change handler: load the selected model; the status line says if it cannot load."""
    allowed = set(models.values())

    def select(model_name: str) -> str:
        if model_name not in allowed:
            return f"ℹ️ “{model_name}” is not one of this Space's models: pick one from the Model list."
        return load_message(registry, model_name)

    return select


def make_respond(registry: ModelRegistry, models: Mapping[str, str], stream_audio: bool = True):
    """The event handler, bound to the page's model registry and its dropdown's choices (label -> folder/id).

    Only those models are ever loaded: the /answer endpoint is public, and loading whatever id a caller
    sends would run any Hub repository's code (trust_remote_code)."""
    allowed = set(models.values())

    def respond(
        model_name: str, audio_path: str | None, typed: str, task_label: str, mode_label: str, use_context: bool,
        do_sample: bool, temperature: float, top_k: float, top_p: float, max_new_tokens: float, seed: float | None,
        history: list | None, turns: list | None,
    ) -> Iterator[tuple[Any, ...]]:
        """Yield (chat, live audio chunk, answer wav, plot, status, context turns) as the answer grows."""
        history, turns = list(history or []), list(turns or [])
        typed = (typed or "").strip()
        try:
            if audio_path:
                wave, rate = load_question(audio_path)
                turn, task = user_turn(wave, rate, ""), TASKS.get(task_label, "s2s")
                shown = [{"role": "user", "content": {"path": audio_path}}]
                if typed:
                    gr.Info("Answering the recording; the typed text is only read aloud when there is no recording.")
            elif typed:
                if len(typed) > MAX_TYPED_CHARS:
                    raise InputProblem(f"The text has {len(typed)} characters; type at most {MAX_TYPED_CHARS}.")
                turn, task, shown = user_turn(None, 0, typed), "t2s", [{"role": "user", "content": typed}]
            else:
                raise InputProblem(
                    "Record or upload a question (or type a sentence to hear it read aloud), then click Ask.")
            if model_name not in allowed:
                raise InputProblem(f"“{model_name}” is not one of this Space's models: pick one from the Model list.")
            loaded = registry.get(model_name)
        except ValueError as problem:  # InputProblem, or a checkpoint that does not load: the message says why
            # Why a model does not load also goes to the status line, where it stays until the next answer.
            status = "" if isinstance(problem, InputProblem) else f"ℹ️ {problem}"
            yield from refused(notice(history, str(problem)), turns, status)
            return
        except Exception as error:
            logger.exception("input or model loading failed")
            yield from refused(notice(history, f"Could not prepare this question: {describe(error)}"), turns)
            return

        mode = MODES.get(mode_label, "audio")
        sampling = Sampling(bool(do_sample), temperature, int(top_k), top_p, int(max_new_tokens),
                            None if seed is None else int(seed))
        conversation = build_conversation(task, turn, turns if use_context else None)
        history = [*history, *shown, {"role": "assistant", "content": ""}]
        yield list(history), None, None, None, "thinking…", turns

        start, first_audio, text, chunks, shown_at = time.perf_counter(), None, "", [], 0.0
        try:
            for piece, chunk in stream_answer(loaded, conversation, mode, sampling):
                text += piece
                history[-1] = {"role": "assistant", "content": text}
                live, now = None, time.perf_counter()
                if chunk is not None and len(chunk):
                    chunks.append(chunk)
                    first_audio = first_audio or now - start
                    live = wav_bytes(chunk, loaded.sampling_rate) if stream_audio else None
                # Every yield re-sends the chat to the browser: audio chunks go out at once, text at most
                # every TEXT_UPDATE_S (a word every ~0.2 s of speech reads as live; 20 updates/s cost CPU).
                if live is not None or now - shown_at >= TEXT_UPDATE_S:
                    shown_at = now
                    yield list(history), live, None, None, "answering…", turns  # a copy: each yield is a snapshot
        except Exception as error:  # never let one request take the server down: tell the visitor, log the rest
            logger.exception("generation failed")
            message = (f"The model failed while answering: {describe(error)}. Ask again, or try another question, "
                       "task or model; the server log has the details.")
            yield notice(history[:-1], message), reset_player(), None, None, "", turns
            return

        seconds = time.perf_counter() - start
        answer = text.strip() or "(no words)"
        history[-1] = {"role": "assistant", "content": answer}
        wav_path, figure = None, None
        status = f"{Path(model_name).name}: answered in {seconds:.2f} s"
        if chunks:
            wave = np.concatenate(chunks)
            wav_path = save_answer(wave, loaded.sampling_rate)
            history.append({"role": "assistant", "content": {"path": wav_path}})
            figure = answer_figure(wave, loaded.sampling_rate)
            status += f", first audio after {first_audio:.2f} s, {len(wave) / loaded.sampling_rate:.1f} s of speech"
        turns = [*turns, turn, {"role": "assistant", "content": answer}]
        yield history, None if chunks and stream_audio else reset_player(), wav_path, figure, status, turns

    return respond


def load_at_start(registry: ModelRegistry, choices: dict[str, str], selected: str,
                  fallback: bool) -> tuple[str, str]:
    """Load the selected model now, so the first visitor does not wait: (the model selected, the status line).

    A model whose pretrained source package is missing leaves the page up, the status line saying what to
    install. If it was only the default (`fallback`), the page opens with the small demo instead, which needs
    nothing more; a model asked for by name stays selected. Any other load error stops here."""
    try:
        registry.get(selected)
        return selected, ""
    except SourceMissing as missing:
        logger.warning("%s", missing)
        spare = next((folder for folder in choices.values() if Path(folder).name == FALLBACK_MODEL.name), None)
        if not fallback or spare is None or spare == selected:
            return selected, f"ℹ️ {missing}"
        registry.get(spare)
        return spare, f"ℹ️ {missing} Opened {Path(spare).name} instead."


def build_demo(model: str | None = None, checkpoints: str | Path = CHECKPOINTS,
               registry: ModelRegistry | None = None, stream_audio: bool = True) -> gr.Blocks:
    """The page. `model` (a folder or Hub id) is selected first; the dropdown also lists every
    `checkpoints/omnidrca-*` model. The selected model is loaded now, the others when first selected.
    `stream_audio=False` (no ffmpeg for gradio's live stream) hides the live player and autoplays the file."""
    registry = registry or ModelRegistry()
    choices, selected = model_choices(model, checkpoints)
    if selected is None:
        raise ValueError(f"No OmniDRCA checkpoint found: expected {DEFAULT_MODEL} or --model <folder or Hub id>, "
                         f"got an empty {checkpoints}. Fix: run from a checkout, or pass --model.")
    selected, problem = load_at_start(registry, choices, selected, fallback=model is None)
    examples = load_examples()

    with gr.Blocks(title="OmniDRCA demo") as demo:
        gr.Markdown(INTRO)
        capabilities = gr.Markdown(capabilities_markdown(selected), elem_id="model-capabilities")
        with gr.Row():
            with gr.Column(scale=2):
                model_box = gr.Dropdown([(k, v) for k, v in choices.items()], value=selected, label="Model",
                                        info="Loaded when first selected, then kept.", elem_id="model-choice")
                audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                    label="Your question (speak or upload)", elem_id="question-audio")
                typed_in = gr.Textbox(label="Or type a sentence to hear it read aloud", lines=1,
                                      max_length=MAX_TYPED_CHARS, elem_id="typed-text")
                task_in = gr.Radio(list(TASKS), value=next(iter(TASKS)), label="Task")
                mode_in = gr.Radio(list(MODES), value="Text and speech", label="Answer in")
                context_in = gr.Checkbox(value=False, label="Send earlier turns as context",
                                         info="Off by default: the demo model was trained on single questions.")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("Clear chat")
                with gr.Accordion("Sampling", open=False):
                    do_sample = gr.Checkbox(value=False, label="Sample (off: greedy, as evaluated)")
                    temperature = gr.Slider(0.1, 1.5, value=0.7, step=0.05, label="Temperature")
                    top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k (0: off)")
                    top_p = gr.Slider(0.1, 1.0, value=0.95, step=0.01, label="Top-p")
                    max_new_tokens = gr.Slider(10, 150, value=60, step=5, label="Max answer steps (5 per second)")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                if examples:
                    gr.Examples([[path, task] for path, _, task in examples], inputs=[audio_in, task_in],
                                example_labels=[question if task == next(iter(TASKS)) else f"{task.lower()}: {question}"
                                                for _, question, task in examples], label="Spoken examples")
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=380, elem_id="chat")
                status = gr.Markdown(problem, elem_id="status")
                live = gr.Audio(label="Spoken answer (live)", streaming=True, autoplay=True, visible=stream_audio,
                                elem_id="live-audio")
                answer_audio = gr.Audio(label="Spoken answer (file)", type="filepath", autoplay=not stream_audio,
                                        elem_id="answer-audio")
                plot = gr.Plot(label="Waveform and spectrogram of the spoken answer")
        with gr.Accordion("Everything the demo model knows", open=False):
            gr.Markdown(fact_list_markdown())

        turns = gr.State([])
        inputs = [model_box, audio_in, typed_in, task_in, mode_in, context_in, do_sample, temperature, top_k, top_p,
                  max_new_tokens, seed, chat, turns]
        outputs = [chat, live, answer_audio, plot, status, turns]
        ask.click(make_respond(registry, choices, stream_audio), inputs, outputs, api_name="answer")
        for finished in (audio_in.upload, audio_in.stop_recording):
            finished(check_question, audio_in, [audio_in, status], api_visibility="private", show_progress="hidden")
        # api_visibility, not api_name=False: gradio 6.0 publishes that as an endpoint named "/False".
        clear.click(lambda: ([], None, None, None, "", []), None, outputs, api_visibility="private")
        # A new selection: say at once what it can do, then load it, so a model that cannot load says why now.
        model_box.change(capabilities_markdown, model_box, capabilities, api_visibility="private",
                         show_progress="hidden").then(
            make_select(registry, choices), model_box, status, api_visibility="private")
    return demo


__all__ = ["build_demo", "capabilities_markdown", "check_question", "fact_list_markdown", "load_examples",
           "load_message", "make_respond", "make_select"]
