"""`config_common_kwargs` for the sdist's `test_configuration_common.py` (written for OmniDRCA; see ../README.md).

The common config test builds a config from these kwargs and checks each one is kept. They are the public
attributes of a plain `PreTrainedConfig()` of the installed transformers, each given a value other than its
default, so the dict follows whatever version runs the tests. (The check returns early for composite configs
such as OmniDRCA's; the module must still import.)
"""

from transformers import PreTrainedConfig


def _other_than(name: str, default):
    """A value of the attribute's kind that differs from `default`."""
    if name == "dtype":
        return "float16"  # the common test compares it with torch.float16
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default + 0.5
    if isinstance(default, str):
        return f"{default}_changed"
    if name.endswith("_token_id"):
        return 5
    if name == "architectures":
        return ["OmniDRCAForConditionalGeneration"]
    return None  # an attribute whose kind the default does not tell: left out


def _common_kwargs() -> dict:
    base = PreTrainedConfig()
    kwargs = {}
    for name, default in sorted(vars(base).items()):
        if name.startswith("_") or name in ("transformers_version", "id2label", "label2id"):
            continue
        value = _other_than(name, default)
        if value is not None:
            kwargs[name] = value
    return kwargs


config_common_kwargs = _common_kwargs()
