"""Listening report on real human English recordings: the model's transcription WER next to Whisper tiny.en's.

    python -m training.listening --model checkpoints/omnidrca-demo [--judge tiny.en] [--output runs/eval/listening.json]

These recordings are for EVALUATION ONLY: never train on them (they are the only real human speech available
offline, and a model that has seen them can no longer be measured on them). Their licences are their packages'
(Debian's copyright files); nothing derived from them is shipped.

Clips come from installed Debian packages (each source is skipped when absent; `--root` adds folders):
- `pocketsphinx-testdata` (`/usr/share/pocketsphinx/test/data/`): LibriVox read sentences and spoken card
  names, with sphinx transcript files (`<s> words </s> (utterance_id)`) beside the audio (`.wav`, or `.raw`:
  16 kHz 16-bit mono);
- `alsa-utils` (`/usr/share/sounds/alsa/*.wav`): channel names ("Front Center"), the file name is the text
  (`Noise.wav` is not speech and is left out);
- `ktuberling-data` (`/usr/share/ktuberling/sounds/en/*.ogg`): single English words; the file name after its
  theme prefix is the word ("pizzeria_olive.ogg" -> "olive"; the few misspelt names are corrected).
Install: `apt-get install pocketsphinx-testdata alsa-utils ktuberling-data`.

Each clip is transcribed by the model (the ASR task's system prompt, greedy, through the public path of
`training.evaluate.ask`) and by Whisper tiny.en (`--judge`); both are scored with the harness's corpus-level WER
against the shipped transcript. Clips longer than 30 s (the audio encoder's window) are skipped and counted.
The target for a new model: its WER within 2x of Whisper tiny.en's.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.schema import SAMPLING_RATE, SYSTEM_PROMPTS

from .scoring import word_errors

POCKETSPHINX_ROOT = Path("/usr/share/pocketsphinx/test/data")
ALSA_ROOT = Path("/usr/share/sounds/alsa")
KTUBERLING_ROOT = Path("/usr/share/ktuberling/sounds/en")
# ktuberling's file names that are not the spoken word's spelling.
NAME_FIXES = {"broccolli": "broccoli", "sphynx": "sphinx", "fallingstar": "falling star", "palmtree": "palm tree"}
MAX_SECONDS = 30.0  # the audio encoder's window (Whisper's 30 s)
TARGET_RATIO = 2.0
NOT_SPEECH = {"noise"}
_SPHINX_LINE = re.compile(r"^\s*(?P<text>.*?)\s*\((?P<id>[^()\s]+)(?:\s+[-\d.]+)?\)\s*$")


@dataclass
class Clip:
    source: str
    path: Path
    text: str


def parse_sphinx_transcription(path: str | Path) -> dict[str, str]:
    """A sphinx transcript file (`<s> words </s> (utterance_id)` per line) -> {utterance_id: words}."""
    return parse_sphinx_transcription_text(Path(path).read_text(errors="replace"))


def parse_sphinx_transcription_text(text: str) -> dict[str, str]:
    """`<s> words </s> (utterance_id)` or `words (utterance_id [score])` lines -> {utterance_id: words}."""
    out = {}
    for line in text.splitlines():
        match = _SPHINX_LINE.match(line)
        if match:
            words = [w for w in match["text"].split() if w.lower() not in ("<s>", "</s>", "<sil>")]
            if words:
                out[match["id"]] = " ".join(words)
    return out


def sphinx_clips(root: str | Path = POCKETSPHINX_ROOT, source: str = "pocketsphinx") -> list[Clip]:
    """Every utterance under `root` whose transcript file (`transcription`, `*.transcription`, `*.lsn`) names an
    audio file beside it (`<id>.wav` or `<id>.raw`); source = `<source>/<folder>` ("pocketsphinx/librivox")."""
    root, clips = Path(root), []
    if not root.is_dir():
        return clips
    listings = sorted(p for p in root.rglob("*") if p.is_file() and
                      (p.name == "transcription" or p.suffix in (".transcription", ".lsn")))
    for listing in listings:
        folder = listing.parent
        name = f"{source}/{folder.relative_to(root)}" if folder != root else source
        for utterance, text in parse_sphinx_transcription(listing).items():
            audio = next((folder / f"{utterance}{ext}" for ext in (".wav", ".raw") if (folder / f"{utterance}{ext}").is_file()),
                         None)
            if audio is not None:
                clips.append(Clip(name.replace("/.", ""), audio, text))
    return clips


def named_clips(root: str | Path = ALSA_ROOT, source: str = "alsa", pattern: str = "*.wav",
                drop_prefix: bool = False) -> list[Clip]:
    """Audio files whose names are their text ("Front_Center.wav" -> "front center"; with `drop_prefix`, only the
    part after the last "_": "egypt_camel.ogg" -> "camel"); non-speech names left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    clips = []
    for path in sorted(root.glob(pattern)):
        stem = path.stem.rsplit("_", 1)[-1] if drop_prefix else path.stem
        text = " ".join(re.split(r"[_\-\s]+", stem)).strip().lower()
        text = NAME_FIXES.get(text, text)
        if text and text not in NOT_SPEECH:
            clips.append(Clip(source, path, text))
    return clips


def collect_clips(pocketsphinx_root=None, alsa_root=None, ktuberling_root=None, extra_roots=()) -> list[Clip]:
    """All human clips found (sources that are not installed give none). Roots default to the packages' folders;
    an extra root holds sphinx transcript files, or else audio files named by their text."""
    clips = sphinx_clips(pocketsphinx_root or POCKETSPHINX_ROOT) + named_clips(alsa_root or ALSA_ROOT)
    clips += named_clips(ktuberling_root or KTUBERLING_ROOT, "ktuberling", "*.ogg", drop_prefix=True)
    for root in extra_roots:
        found = sphinx_clips(root, source=Path(root).name)
        clips += found or named_clips(root, source=Path(root).name)
    return clips


def load_audio(path: str | Path) -> np.ndarray:
    """16 kHz mono float32: `.raw` is headerless 16 kHz 16-bit little-endian mono (sphinx's test format)."""
    path = Path(path)
    if path.suffix == ".raw":
        return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
    import soundfile as sf

    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if sr != SAMPLING_RATE:
        from modeling_omnidrca.audio_utils import resample

        wave = resample(wave, sr, SAMPLING_RATE)
    return np.asarray(wave, dtype=np.float32)


def wer_table(rows: list[dict]) -> list[dict]:
    """Per-clip rows {source, seconds, model: (errors, words), whisper: (errors, words)} -> per-source and total rows:
    {source, clips, hours, model_wer, whisper_wer, ratio} (corpus-level WER; ratio None when Whisper made no error)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["source"], []).append(row)
    out = []
    for source, members in [*sorted(groups.items()), ("all", rows)]:
        words = sum(r["model"][1] for r in members)
        model = sum(r["model"][0] for r in members) / max(words, 1)
        whisper = sum(r["whisper"][0] for r in members) / max(sum(r["whisper"][1] for r in members), 1)
        out.append({"source": source, "clips": len(members), "hours": sum(r["seconds"] for r in members) / 3600,
                    "model_wer": model, "whisper_wer": whisper, "ratio": model / whisper if whisper else None})
    return out


def markdown(table: list[dict], skipped: int, judge: str = "tiny.en") -> str:
    lines = [f"| source | clips | hours | model WER | Whisper {judge} WER | ratio (target <= {TARGET_RATIO:g}x) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in table:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        name = f"**{r['source']}**" if r["source"] == "all" else r["source"]
        lines.append(f"| {name} | {r['clips']} | {r['hours']:.4f} | {100 * r['model_wer']:.1f} % | "
                     f"{100 * r['whisper_wer']:.1f} % | {ratio} |")
    lines.append(f"\nClips skipped (longer than {MAX_SECONDS:g} s): {skipped}")
    return "\n".join(lines)


def listen(model, processor, judge, clips: list[Clip], max_new_tokens: int = 120, progress: bool = True) -> dict:
    """Transcribe every clip with the model and the judge; the report's rows, table and skipped count."""
    from tqdm.auto import tqdm

    from .evaluate import ask

    rows, skipped = [], 0
    for clip in tqdm(clips, desc="listening", disable=not progress):
        wave = load_audio(clip.path)
        seconds = len(wave) / SAMPLING_RATE
        if seconds > MAX_SECONDS:
            skipped += 1
            continue
        heard = ask(model, processor, wave, "text", system_prompt=SYSTEM_PROMPTS["asr"],
                    max_new_tokens=max_new_tokens).text
        whisper = judge(wave)
        rows.append({"source": clip.source, "path": str(clip.path), "seconds": seconds, "text": clip.text,
                     "model_text": heard, "whisper_text": whisper, "model": word_errors(clip.text, heard),
                     "whisper": word_errors(clip.text, whisper)})
    return {"table": wer_table(rows) if rows else [], "skipped": skipped, "clips": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--judge", default="tiny.en", choices=("tiny.en", "base"), help="the Whisper to compare with")
    parser.add_argument("--root", action="append", default=[], help="another folder of clips (sphinx transcripts or "
                        "file name = text); repeatable")
    parser.add_argument("--adapter", help="a PEFT adapter folder to apply to the model first")
    parser.add_argument("--output", help="JSON results path (a .md table is written next to it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from .evaluate import load_for_evaluation, write_results
    from .judges import WhisperJudge, judge_model_dir

    clips = collect_clips(extra_roots=args.root)
    if not clips:
        raise SystemExit("no human clips found: apt-get install pocketsphinx-testdata alsa-utils ktuberling-data (or --root)")
    model, processor = load_for_evaluation(args.model, args.adapter, args.threads)
    judge = WhisperJudge(judge_model_dir(args.judge), threads=args.threads)
    results = listen(model, processor, judge, clips, progress=not args.no_progress)
    results.update(model=args.model, adapter=args.adapter, judge=args.judge, judge_loops=judge.loops)
    write_results(results, markdown(results["table"], results["skipped"], args.judge), args.output)
    return results


if __name__ == "__main__":
    main()
