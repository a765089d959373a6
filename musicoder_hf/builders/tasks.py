"""Labeled downstream tasks rendered to audio from the music21 corpus.

`musicoder-data build-tasks --output_dir data/tasks [--tasks folk,instruments] [--limit N] [--seed 0]`

Two tasks, each written as a Hugging Face `audiofolder` dataset
(`<output_dir>/<task>/<split>/<file>.flac` + `<split>/metadata.jsonl`, plus `labels.json`,
`splits.json`, `manifest.json`), readable with `musicoder_hf.data.labeled.load_labeled_dataset`
or `datasets.load_dataset("audiofolder", data_dir=...)`:

* ``folk`` -- single-label folk tradition, 5 balanced classes (the GTZAN-like task):
  ``german`` (Essen folk-song database, German collections), ``chinese`` (Essen, han1/han2),
  ``irish`` (O'Neill's Music of Ireland, 1850 tunes), ``scottish`` (Aird's Airs),
  ``american`` (Ryan's Mammoth Collection).  Only the melody is rendered (first voice, top note
  of any double stop, no chord symbols, no dynamics), every class with the same instrument
  programs, the same tempo distribution and the same loudness normalisation, and every clip is
  exactly 30 s (short tunes are repeated, as folk tunes are played), so neither timbre, tempo
  encoding, level nor clip length gives the label away.
* ``instruments`` -- multi-label instrument-family tagging (the MTG-Jamendo-like task): pieces
  with 2-4 parts (Bach chorales, Palestrina, Trecento; the corpus's Monteverdi madrigals are
  searched too but all have 5-6 voices); every part gets a General MIDI program from a family
  (seeded), labels = the set of families present.

Rendering: music21's MIDI writer (explicit programs, channels, tempo, velocities) -> Debian's
``fluidsynth`` with ``fluid-soundfont-gm`` (FluidR3_GM.sf2) at 44.1 kHz -> mono -> RMS
normalisation -> 16-bit FLAC.  A build is deterministic given ``--seed``, resumable (parsed tunes
are cached in ``<task>/.cache/``, finished renders are reused, writes are atomic) and runs on all
cores.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils import atomic_write_text, command_line_parser, parse_command_line, write_json

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SAMPLING_RATE = 44100
CLIP_SECONDS = 30.0
TASKS = ("folk", "instruments")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}
NUM_FOLDS = 10

# Bump when parsing (events) or rendering (audio) changes: cached results with another version are redone.
PARSE_VERSION = 1
RENDER_VERSION = 1

TARGET_RMS = 0.1  # -20 dBFS
PEAK_LIMIT = 0.99
FLUIDSYNTH_GAIN = 0.5
# no interactive shell, quiet, float output; reverb on (FluidSynth's default room), chorus off; a large
# period size and lazy sample loading make offline rendering cheaper.
FLUIDSYNTH_OPTIONS = (
    "-ni",
    "-q",
    "-g",
    str(FLUIDSYNTH_GAIN),
    "-r",
    str(SAMPLING_RATE),
    "-O",
    "float",
    "-T",
    "wav",
    "-C",
    "0",
    "-z",
    "4096",
    "-o",
    "synth.dynamic-sample-loading=1",
)
MIN_FOLK_NOTES = 12
MIN_PIECE_SECONDS = 5.0

# ---------------------------------------------------------------------------------------------
# folk: sources and rendering choices
# ---------------------------------------------------------------------------------------------

_ESSEN_GERMAN = (
    ["altdeu10", "altdeu20"]
    + [f"ballad{i}0" for i in range(1, 9)]
    + ["boehme10", "boehme20", "dva0", "erk5", "erk10", "erk20", "erk30", "fink0", "kinder0", "zuccal0"]
)
FOLK_CLASSES = {
    # label: (description, corpus-relative ABC files)
    "german": (
        "Essen folk-song database, German collections (tunes whose origin field O: names Deutschland)",
        [f"essenFolksong/{name}.abc" for name in _ESSEN_GERMAN],
    ),
    "chinese": (
        "Essen folk-song database, Chinese collections (han1, han2)",
        ["essenFolksong/han1.abc", "essenFolksong/han2.abc"],
    ),
    "irish": ("O'Neill's Music of Ireland (1850), oneills1850/", ["oneills1850/*.abc"]),
    "scottish": (
        "Aird's Selection of Scotch, English, Irish and Foreign Airs (1778-1803), airdsAirs/",
        ["airdsAirs/*.abc"],
    ),
    "american": ("Ryan's Mammoth Collection (Boston, 1883), ryansMammoth/", ["ryansMammoth/*.abc"]),
}
FOLK_LABELS = list(FOLK_CLASSES)

# The same programs for every class: program k goes to the tunes of rank k (mod len) in every
# class, so each class and split holds exactly the same multiset of programs.
DEFAULT_FOLK_PROGRAMS = (0, 24, 40, 73)  # Acoustic Grand Piano, Nylon Guitar, Violin, Flute
# Tempo: the tune's median note lasts d seconds, d ~ U(lo, hi), the same draws for every class.
FOLK_MEDIAN_NOTE_SECONDS = (0.20, 0.40)
FOLK_VELOCITY = 90
FOLK_FADE_SECONDS = 0.5

# ---------------------------------------------------------------------------------------------
# instruments: sources, families and programs
# ---------------------------------------------------------------------------------------------

INSTRUMENT_SOURCES = {
    "bach": ("Bach chorales, bach/", ["bach/*.mxl", "bach/*.xml", "bach/*.krn"]),
    "monteverdi": ("Monteverdi madrigals, monteverdi/", ["monteverdi/*.mxl"]),
    "palestrina": ("Palestrina masses, palestrina/", ["palestrina/*.krn"]),
    "trecento": ("Trecento (14th-century Italian) pieces, trecento/", ["trecento/*.xml", "trecento/*.mxl"]),
}
# family -> ((GM program (0-based), name, lowest, highest comfortable median MIDI pitch), ...)
INSTRUMENT_FAMILIES = {
    "keyboard": (
        (0, "Acoustic Grand Piano", 21, 108),
        (1, "Bright Acoustic Piano", 21, 108),
        (4, "Electric Piano 1", 28, 103),
        (6, "Harpsichord", 29, 89),
    ),
    "organ": (
        (16, "Drawbar Organ", 24, 96),
        (19, "Church Organ", 24, 96),
        (20, "Reed Organ", 36, 96),
        (21, "Accordion", 41, 89),
    ),
    "guitar": (
        (24, "Acoustic Guitar (nylon)", 40, 84),
        (25, "Acoustic Guitar (steel)", 40, 84),
        (26, "Electric Guitar (jazz)", 40, 86),
        (27, "Electric Guitar (clean)", 40, 86),
    ),
    "strings": (
        (40, "Violin", 55, 100),
        (41, "Viola", 48, 88),
        (42, "Cello", 36, 76),
        (48, "String Ensemble 1", 28, 96),
    ),
    "brass": (
        (56, "Trumpet", 54, 84),
        (57, "Trombone", 40, 72),
        (60, "French Horn", 41, 77),
        (61, "Brass Section", 36, 84),
    ),
    "woodwind": ((68, "Oboe", 58, 91), (70, "Bassoon", 34, 72), (71, "Clarinet", 50, 91), (73, "Flute", 60, 96)),
    "voice": ((52, "Choir Aahs", 36, 84), (53, "Voice Oohs", 36, 84), (54, "Synth Voice", 36, 84)),
    "mallet": (
        (8, "Celesta", 60, 108),
        (11, "Vibraphone", 53, 89),
        (12, "Marimba", 45, 96),
        (13, "Xylophone", 65, 108),
    ),
}
INSTRUMENT_LABELS = list(INSTRUMENT_FAMILIES)
INSTRUMENT_MEDIAN_NOTE_SECONDS = (0.35, 0.70)
INSTRUMENT_VELOCITY = 80


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [_crc(k) for k in keys])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def _glob(patterns) -> list[Path]:
    root = _corpus_root()
    files = set()
    for pattern in patterns:
        files.update(root.glob(pattern))
    return sorted(files)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically; skip (return False) when the file already holds it, so a rebuild that
    changes nothing leaves the files (and their modification times) alone."""
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def _split_sizes(n: int) -> dict[str, int]:
    """70/15/15 by count; at least one item in validation and test as soon as n >= 3."""
    n_val = int(round(n * SPLIT_FRACTIONS["validation"]))
    n_test = int(round(n * SPLIT_FRACTIONS["test"]))
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    return {"train": n - n_val - n_test, "validation": n_val, "test": n_test}


def _fluidsynth_version() -> str:
    try:
        out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "missing"


def check_renderer(soundfont: str = SOUNDFONT) -> None:
    """Raise a clear error when fluidsynth or the GM soundfont is missing."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError(
            "`fluidsynth` not found: install it (Debian/Ubuntu: "
            "`apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm`)."
        )
    if not Path(soundfont).is_file():
        raise RuntimeError(f"soundfont {soundfont} not found: install `fluid-soundfont-gm` or pass --soundfont.")


# ---------------------------------------------------------------------------------------------
# candidates (cheap: text only, no music21 parsing)
# ---------------------------------------------------------------------------------------------

_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")


def _abc_tunes(text: str):
    """Yield (index, tune_text) for each tune of an ABC file (a tune starts at an `X:` line)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        yield k, "\n".join(lines[start:end]).strip() + "\n"


def _abc_fields_and_body(tune: str) -> tuple[dict, str]:
    fields: dict[str, list[str]] = collections.defaultdict(list)
    body = []
    in_body = False
    for line in tune.splitlines():
        m = _FIELD.match(line)
        if not in_body and m:
            fields[m.group(1)].append(m.group(2).strip())
            if m.group(1) == "K":
                in_body = True
            continue
        if in_body and not line.startswith("%") and not m:
            body.append(line.split("%", 1)[0])
    return fields, re.sub(r"\s+", "", "".join(body))


def folk_candidates() -> dict[str, list[dict]]:
    """All candidate tunes per folk class, de-duplicated, in a fixed (sorted) order.

    De-duplication: Essen variants of one song (N: codes E0001, E0001A, E0001B ...) keep the first;
    O'Neill tunes that appear in two transcriptions (files 0626-0635 and 0626-0700, `_bs`/`_mh` ...)
    keep the first by tune number (X:); a tune body that occurs twice anywhere is kept once, and a
    body found in two classes is dropped from both.
    """
    root = _corpus_root()
    out: dict[str, list[dict]] = {}
    for label, (_, patterns) in FOLK_CLASSES.items():
        seen_keys = set()
        cands = []
        for path in _glob(patterns):
            rel = path.relative_to(root).as_posix()
            for index, tune in _abc_tunes(_read_text(path)):
                fields, body = _abc_fields_and_body(tune)
                if not body:
                    continue
                x = (fields.get("X") or [""])[0]
                if label == "german" and not any("deutschland" in o.lower() for o in fields.get("O", [])):
                    continue
                if label in ("german", "chinese"):
                    code = next((n for n in fields.get("N", []) if re.match(r"^[A-Z]+\d+[A-Z]*$", n)), None)
                    key = re.sub(r"[A-Z]+$", "", code) if code else f"{rel}#{index}"
                elif label == "irish":
                    key = x if x.isdigit() else f"{rel}#{index}"
                    key = str(int(key)) if key.isdigit() else key
                else:
                    key = f"{rel}#{index}"
                if key in seen_keys:
                    continue
                seen_keys.add(key)
                cands.append(
                    {
                        "piece_id": f"{label}-{_slug(path.stem)}-{index:04d}",
                        "label": label,
                        "path": rel,
                        "index": index,
                        "source": f"{rel}#X:{x} (tune {index + 1} in file)",
                        "title": (fields.get("T") or [""])[0],
                        "text": tune,
                        "body_hash": hashlib.sha1(body.encode("utf-8")).hexdigest(),
                    }
                )
        out[label] = cands
    # exact duplicate bodies: keep the first within a class, drop those shared by two classes
    owners = collections.defaultdict(set)
    for label, cands in out.items():
        for c in cands:
            owners[c["body_hash"]].add(label)
    for label, cands in out.items():
        seen, kept = set(), []
        for c in cands:
            h = c["body_hash"]
            if len(owners[h]) > 1 or h in seen:
                continue
            seen.add(h)
            kept.append(c)
        out[label] = kept
    return out


def _count_parts(path: Path) -> int | None:
    """Number of parts read from the file's text (no parsing); None when unknown."""
    try:
        if path.suffix == ".krn":
            for line in _read_text(path).splitlines():
                if line.startswith("**"):
                    return sum(tok == "**kern" for tok in line.split("\t")) or None
            return None
        if path.suffix == ".mxl":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith((".xml", ".musicxml")) and not n.startswith("META")]
                data = z.read(names[0]) if names else b""
            text = (
                data.decode("utf-16", "replace")
                if data[:2] in (b"\xff\xfe", b"\xfe\xff")
                else data.decode("utf-8", "replace")
            )
        else:
            text = _read_text(path)
        return len(re.findall(r"<score-part[\s>]", text)) or None
    except (OSError, zipfile.BadZipFile, IndexError):
        return None


def instrument_candidates() -> dict[str, list[dict]]:
    """Candidate pieces per source; files whose text shows more than 4 (or fewer than 2) parts are skipped.

    Bach: one file per BWV number (.mxl preferred over .xml over .krn; `-a` variants dropped)."""
    root = _corpus_root()
    out = {}
    for source, (_, patterns) in INSTRUMENT_SOURCES.items():
        files = _glob(patterns)
        if source == "bach":
            best = {}
            rank = {".mxl": 0, ".xml": 1, ".krn": 2}
            for f in files:
                key = re.sub(r"-[a-z]$", "", f.stem)
                if key not in best or (rank[f.suffix], f.name) < (rank[best[key].suffix], best[key].name):
                    best[key] = f
            files = sorted(best.values())
        cands = []
        for f in files:
            n = _count_parts(f)
            if n is not None and not 2 <= n <= 4:
                continue
            rel = f.relative_to(root).as_posix()
            cands.append(
                {
                    "piece_id": f"{source}-{_slug(f.stem)}",
                    "source_name": source,
                    "path": rel,
                    "source": rel,
                    "title": f.stem,
                }
            )
        out[source] = cands
    return out


# ---------------------------------------------------------------------------------------------
# phase A: parse with music21 into note events (workers; results cached)
# ---------------------------------------------------------------------------------------------


def _part_events(part, top_note_only: bool):
    """[[onset_ql, duration_ql, midi_pitch], ...] of a part: ties merged, no grace notes, no chord symbols."""
    from music21 import chord, harmony

    flat = part.flatten()  # (music21's stripTies is slow on long parts: ties are merged here)
    events, open_ties = [], {}
    for n in flat.notes:
        if isinstance(n, harmony.Harmony):
            continue
        ql = float(n.quarterLength)
        if ql <= 0 or n.duration.isGrace:
            continue
        subs = list(n.notes) if isinstance(n, chord.Chord) else [n]
        subs = [s for s in subs if getattr(s, "pitch", None) is not None]
        if not subs:
            continue
        if top_note_only:
            subs = [max(subs, key=lambda s: s.pitch.midi)]
        onset = float(n.offset)
        for s in subs:
            pitch = int(s.pitch.midi)
            tie = (s.tie.type if s.tie is not None else None) or (n.tie.type if n.tie is not None else None)
            held = open_ties.get(pitch)
            if tie in ("continue", "stop") and held is not None and abs(held[0] + held[1] - onset) < 1e-6:
                held[1] = round(onset + ql - held[0], 6)
                if tie == "stop":
                    del open_ties[pitch]
                continue
            event = [round(onset, 6), round(ql, 6), pitch]
            events.append(event)
            if tie in ("start", "continue"):
                open_ties[pitch] = event
            else:
                open_ties.pop(pitch, None)
    events.sort()
    return events, float(flat.highestTime)


def _median_ql(events) -> float:
    return float(np.median([e[1] for e in events])) if events else 1.0


def _parse_folk(cand: dict) -> dict:
    from music21 import converter, stream

    res = {"piece_id": cand["piece_id"], "ok": False}
    try:
        score = converter.parseData(cand["text"], format="abc")
        if isinstance(score, stream.Opus):
            score = score.scores[0]
        parts = list(score.parts) or [score]
        events, end = _part_events(parts[0], top_note_only=True)
        title = score.metadata.title if score.metadata is not None and score.metadata.title else cand["title"]
    except Exception as err:  # music21 raises many exception types on malformed ABC
        res["reason"] = f"parse_error: {type(err).__name__}"
        return res
    if len(events) < MIN_FOLK_NOTES:
        res["reason"] = "too_few_notes"
        return res
    first = events[0][0]
    events = [[round(o - first, 6), d, p] for o, d, p in events]
    length = max(end - first, max(o + d for o, d, _ in events))
    res.update(
        ok=True, title=title, parts=[{"events": events}], length_ql=round(length, 6), median_ql=_median_ql(events)
    )
    return res


def _parse_piece(cand: dict) -> dict:
    from music21 import converter

    res = {"piece_id": cand["piece_id"], "ok": False}
    try:
        score = converter.parse(str(_corpus_root() / cand["path"]), forceSource=True, storePickle=False)
        parts, median_pitches = [], []
        for part in score.parts:
            events, _ = _part_events(part, top_note_only=False)
            if events:
                parts.append({"name": str(part.partName or ""), "events": events})
        title = score.metadata.title if score.metadata is not None and score.metadata.title else cand["title"]
    except Exception as err:
        res["reason"] = f"parse_error: {type(err).__name__}"
        return res
    if not 2 <= len(parts) <= 4:
        res["reason"] = "part_count"
        return res
    first = min(p["events"][0][0] for p in parts)
    all_events = [e for p in parts for e in p["events"]]
    median_ql = _median_ql(all_events)
    # keep only what the longest clip can use (slowest tempo), so the cache stays small
    cap_ql = (CLIP_SECONDS + 1.0) / INSTRUMENT_MEDIAN_NOTE_SECONDS[0] * median_ql
    for p in parts:
        p["events"] = [[round(o - first, 6), d, x] for o, d, x in p["events"] if o - first < cap_ql]
        median_pitches.append(int(np.median([e[2] for e in p["events"]])) if p["events"] else 60)
        p["median_pitch"] = median_pitches[-1]
    length = max(o + d for p in parts for o, d, _ in p["events"])
    res.update(ok=True, title=title, parts=parts, length_ql=round(length, 6), median_ql=median_ql)
    return res


def _parse_job(job: tuple[str, dict]) -> dict:
    task, cand = job
    return _parse_folk(cand) if task == "folk" else _parse_piece(cand)


# ---------------------------------------------------------------------------------------------
# phase B: render one clip (workers)
# ---------------------------------------------------------------------------------------------


def write_midi(path, parts, bpm: float, velocity: int, horizon_ql: float, loop_ql: float | None = None) -> float:
    """Write a format-1 MIDI file with music21's MIDI writer (`music21.midi`): one tempo track, then
    one track per part on its own channel (never the GM drum channel) with an explicit program change.

    parts: [{"program": int, "events": [[onset_ql, duration_ql, midi_pitch], ...]}, ...].
    Events are repeated every `loop_ql` quarter notes when given; nothing starts at or after `horizon_ql`.
    Returns the end of the last note in quarter notes.
    """
    from music21 import midi as m21midi

    tpq = 10080  # music21's default resolution: exact for duplets, triplets, quintuplets and septuplets
    cvm, meta = m21midi.ChannelVoiceMessages, m21midi.MetaEvents

    def track(index, timed):
        trk = m21midi.MidiTrack(index)
        prev = 0
        for tick, _, ev in sorted(timed, key=lambda x: (x[0], x[1])):
            ev.track = trk
            trk.events += [m21midi.DeltaTime(trk, time=tick - prev), ev]
            prev = tick
        end = m21midi.MidiEvent(trk, type=meta.END_OF_TRACK)
        end.data = b""
        trk.events += [m21midi.DeltaTime(trk, time=0), end]
        trk.updateEvents()
        return trk

    mf = m21midi.MidiFile()
    mf.ticksPerQuarterNote = tpq
    set_tempo = m21midi.MidiEvent(None, type=meta.SET_TEMPO)
    set_tempo.data = m21midi.putNumber(int(round(60_000_000 / bpm)), 3)
    mf.tracks.append(track(0, [(0, 0, set_tempo)]))
    last_end = 0.0
    for i, part in enumerate(parts):
        channel = i + 1 if i < 9 else i + 2  # 1-based; skip channel 10 (drums)
        program = m21midi.MidiEvent(None, type=cvm.PROGRAM_CHANGE, channel=channel)
        program.data = int(part["program"])
        timed = [(0, 0, program)]
        repeats = int(math.ceil(horizon_ql / loop_ql)) if loop_ql else 1
        for k in range(repeats):
            shift = k * loop_ql if loop_ql else 0.0
            for onset, dur, pitch in part["events"]:
                start = onset + shift
                if start >= horizon_ql:
                    break
                on = m21midi.MidiEvent(None, type=cvm.NOTE_ON, channel=channel)
                on.pitch, on.velocity = int(pitch), int(velocity)
                off = m21midi.MidiEvent(None, type=cvm.NOTE_OFF, channel=channel)
                off.pitch, off.velocity = int(pitch), 0
                timed += [(int(round(start * tpq)), 2, on), (int(round((start + dur) * tpq)), 1, off)]
                last_end = max(last_end, start + dur)
        mf.tracks.append(track(i + 1, timed))
    Path(path).write_bytes(mf.writestr())
    return last_end


def _render_job(job: dict) -> dict:
    """MIDI (music21) -> fluidsynth -> mono, cut, normalised 16-bit FLAC at job['dest'] (atomic)."""
    import soundfile as sf

    dest = Path(job["dest"])
    res = {"piece_id": job["piece_id"], "ok": False}
    bpm = float(job["bpm"])
    sec_per_ql = 60.0 / bpm
    clip = float(job["clip_seconds"])
    with tempfile.TemporaryDirectory(prefix="musicoder-render-") as tmp:
        midi_path = Path(tmp) / "clip.mid"
        try:
            horizon_ql = (clip + 0.75) / sec_per_ql  # render a little past the clip end
            last_end = write_midi(midi_path, job["parts"], bpm, job["velocity"], horizon_ql, job.get("loop_ql"))
        except Exception as err:
            res["reason"] = f"export_error: {type(err).__name__}"
            return res
        wav_path = Path(tmp) / "clip.wav"
        cmd = ["fluidsynth", *FLUIDSYNTH_OPTIONS, "-F", str(wav_path), job["soundfont"], str(midi_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            audio, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
        except Exception as err:
            res["reason"] = f"render_error: {type(err).__name__}"
            return res
        if proc.returncode != 0 or sr != SAMPLING_RATE or len(audio) == 0:
            res["reason"] = f"render_error: fluidsynth rc={proc.returncode}"
            return res
    y = audio.mean(axis=1)
    n_clip = int(round(clip * SAMPLING_RATE))
    if job["mode"] == "loop":  # folk: always exactly `clip` seconds
        if len(y) < n_clip:
            y = np.concatenate([y, np.zeros(n_clip - len(y), np.float32)])
        y = y[:n_clip]
        fade = int(FOLK_FADE_SECONDS * SAMPLING_RATE)
    else:  # instruments: the piece up to `clip` seconds, with at most 1 s of release tail
        n_end = min(n_clip, int(round((last_end * sec_per_ql + 1.0) * SAMPLING_RATE)), len(y))
        fade = int((FOLK_FADE_SECONDS if n_end == n_clip else 0.05) * SAMPLING_RATE)
        y = y[:n_end]
    y = y.astype(np.float64)
    if fade and len(y) > fade:
        y[-fade:] *= np.linspace(1.0, 0.0, fade)
    rms = float(np.sqrt(np.mean(y**2))) if len(y) else 0.0
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if rms < 1e-5:
        res["reason"] = "silent"
        return res
    y = y * min(TARGET_RMS / rms, PEAK_LIMIT / peak)
    duration = len(y) / SAMPLING_RATE
    if duration < MIN_PIECE_SECONDS:
        res["reason"] = "too_short"
        return res
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = dest.with_name(f".{dest.name}.tmp")
    sf.write(str(tmp_path), y.astype(np.float32), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp_path, dest)
    res.update(ok=True, duration_seconds=round(duration, 3))
    return res


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _executor(num_workers: int):
    """`map_unordered(fn, items)`: a fork pool for num_workers > 1, in-process otherwise."""
    if num_workers <= 1:
        yield lambda fn, items: map(fn, items)
        return
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = mp.get_context(method).Pool(num_workers)
    try:
        yield lambda fn, items: pool.imap_unordered(fn, items, chunksize=1)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="clip" if "render" in desc else "piece", dynamic_ncols=True)


class _ParseCache:
    """Append-only JSONL of parse results keyed by piece_id (last line wins; torn lines are skipped)."""

    def __init__(self, path: Path):
        import music21

        self.path = path
        self.key = f"{PARSE_VERSION}:{music21.__version__}"
        self.records: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("cache_key") == self.key and "piece_id" in rec:
                    self.records[rec["piece_id"]] = rec
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def __contains__(self, piece_id):
        return piece_id in self.records

    def __getitem__(self, piece_id):
        return self.records[piece_id]

    def add(self, rec: dict):
        rec = dict(rec, cache_key=self.key)
        self.records[rec["piece_id"]] = rec
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self):
        self._fh.close()


def _parse_needed(task, cands, cache, run, progress):
    todo = [c for c in cands if c["piece_id"] not in cache]
    if not todo:
        return
    results = run(_parse_job, [(task, c) for c in todo])
    for rec in _progress(results, len(todo), f"parse {task}", progress):
        cache.add(rec)


def _select_balanced(task, groups, target, cache, run, progress):
    """Walk each group's seeded order, parsing on demand, until every group has `target` successes;
    a group that runs out lowers the target for all.  Returns ({group: selected}, {group: consumed})."""
    pos = {g: 0 for g in groups}
    while True:
        ok = {g: [c for c in groups[g][: pos[g]] if cache[c["piece_id"]]["ok"]] for g in groups}
        for g in groups:
            if pos[g] >= len(groups[g]):
                target = min(target, len(ok[g]))
        batch = []
        for g in groups:
            need = target - len(ok[g])
            if need > 0 and pos[g] < len(groups[g]):
                take = groups[g][pos[g] : pos[g] + max(need + 2, int(need * 1.15) + 1)]
                pos[g] += len(take)
                batch += take
        if not batch:
            return {g: ok[g][:target] for g in groups}, pos
        _parse_needed(task, batch, cache, run, progress)


def _select_total(task, order, target, cache, run, progress):
    """The first `target` successes (None: all) of `order`, parsing on demand.  Returns (selected, consumed)."""
    upto = 0
    while True:
        ok = [c for c in order[:upto] if cache[c["piece_id"]]["ok"]]
        if upto >= len(order) or (target is not None and len(ok) >= target):
            return (ok if target is None else ok[:target]), upto
        need = len(order) if target is None else max(target - len(ok) + 2, int((target - len(ok)) * 1.2) + 1)
        batch = order[upto : upto + need]
        upto += len(batch)
        _parse_needed(task, batch, cache, run, progress)


def _interleave(groups: dict[str, list]) -> list:
    out, iters = [], [list(v) for v in groups.values()]
    for k in range(max((len(v) for v in iters), default=0)):
        for v in iters:
            if k < len(v):
                out.append(v[k])
    return out


def _render_spec_hash(spec: dict, soundfont: str) -> str:
    payload = {k: v for k, v in spec.items() if k not in ("dest", "piece_id")}
    payload["render_version"] = RENDER_VERSION
    payload["fluidsynth_options"] = list(FLUIDSYNTH_OPTIONS)
    payload["soundfont"] = [
        os.path.basename(soundfont),
        os.path.getsize(soundfont) if os.path.exists(soundfont) else 0,
    ]
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:10]


def _plan_folk(selected: dict[str, list], cache, seed, programs) -> list[dict]:
    n = min(len(v) for v in selected.values())
    sizes = _split_sizes(n)
    bounds = {
        "train": (0, sizes["train"]),
        "validation": (sizes["train"], sizes["train"] + sizes["validation"]),
        "test": (sizes["train"] + sizes["validation"], n),
    }
    d = _rng(seed, "folk", "tempo").uniform(*FOLK_MEDIAN_NOTE_SECONDS, size=max(n, 1))
    prng = _rng(seed, "folk", "programs")
    prog_idx = np.concatenate([prng.permutation(len(programs)) for _ in range(max(1, math.ceil(n / len(programs))))])
    items = []
    for label in FOLK_LABELS:
        for rank, cand in enumerate(selected[label][:n]):
            rec = cache[cand["piece_id"]]
            split = next(s for s, (lo, hi) in bounds.items() if lo <= rank < hi)
            bpm = float(np.clip(60.0 * rec["median_ql"] / d[rank], 10.0, 1500.0))
            program = int(programs[prog_idx[rank]])
            items.append(
                {
                    "piece_id": cand["piece_id"],
                    "label": label,
                    "split": split,
                    "fold": rank % NUM_FOLDS,
                    "source": cand["source"],
                    "title": rec.get("title") or cand["title"],
                    "render": {
                        "parts": [{"program": program, "events": rec["parts"][0]["events"]}],
                        "bpm": round(bpm, 4),
                        "loop_ql": rec["length_ql"],
                        "mode": "loop",
                        "clip_seconds": CLIP_SECONDS,
                        "velocity": FOLK_VELOCITY,
                    },
                    "programs": [program],
                    "median_note_seconds": round(float(d[rank]), 4),
                }
            )
    return items


def _choose_families(seed: int, piece_id: str, median_pitches: list[int]):
    rng = _rng(seed, "instruments", piece_id)
    n_parts = len(median_pitches)
    k = int(rng.integers(1, n_parts + 1))
    fams = [INSTRUMENT_LABELS[i] for i in rng.choice(len(INSTRUMENT_LABELS), size=k, replace=False)]
    order = rng.permutation(n_parts)
    part_fams = [None] * n_parts
    for j, part_index in enumerate(order):
        part_fams[part_index] = fams[j] if j < k else fams[int(rng.integers(k))]
    programs = []
    for fam, pitch in zip(part_fams, median_pitches):
        options = [p for p in INSTRUMENT_FAMILIES[fam] if p[2] <= pitch <= p[3]] or list(INSTRUMENT_FAMILIES[fam])
        programs.append(int(options[int(rng.integers(len(options)))][0]))
    d = float(rng.uniform(*INSTRUMENT_MEDIAN_NOTE_SECONDS))
    return part_fams, programs, d


def _plan_instruments(selected: list[dict], cache, seed) -> list[dict]:
    n = len(selected)
    sizes = _split_sizes(n)
    perm = _rng(seed, "instruments", "split").permutation(n)
    split_of = {}
    for pos, idx in enumerate(perm):
        split_of[idx] = (
            "train" if pos < sizes["train"] else "validation" if pos < sizes["train"] + sizes["validation"] else "test"
        )
    items = []
    for idx, cand in enumerate(selected):
        rec = cache[cand["piece_id"]]
        part_fams, programs, d = _choose_families(seed, cand["piece_id"], [p["median_pitch"] for p in rec["parts"]])
        bpm = float(np.clip(60.0 * rec["median_ql"] / d, 10.0, 1500.0))
        labels = [f for f in INSTRUMENT_LABELS if f in part_fams]
        items.append(
            {
                "piece_id": cand["piece_id"],
                "labels": labels,
                "split": split_of[idx],
                "source": cand["source"],
                "title": rec.get("title") or cand["title"],
                "programs": programs,
                "part_families": part_fams,
                "median_note_seconds": round(d, 4),
                "render": {
                    "parts": [{"program": prog, "events": p["events"]} for prog, p in zip(programs, rec["parts"])],
                    "bpm": round(bpm, 4),
                    "loop_ql": None,
                    "mode": "truncate",
                    "clip_seconds": CLIP_SECONDS,
                    "velocity": INSTRUMENT_VELOCITY,
                },
            }
        )
    return items


def _existing_audio(task_dir: Path) -> dict[str, Path]:
    found = {}
    for split_dir in task_dir.iterdir() if task_dir.exists() else []:
        if split_dir.is_dir() and not split_dir.name.startswith("."):
            for f in split_dir.glob("*.flac"):
                found[f.name] = f
            for f in split_dir.glob(".*.tmp"):  # a render interrupted mid-write
                f.unlink()
    return found


def _render_items(task, task_dir, items, cache, run, progress, soundfont):
    """Render what is missing; returns {piece_id: failure reason} for renders that failed."""
    existing = _existing_audio(task_dir)
    jobs = []
    for it in items:
        spec = dict(it["render"])
        fname = f"{it['piece_id']}_{_render_spec_hash(spec, soundfont)}.flac"
        dest = task_dir / it["split"] / fname
        it["file_name"] = fname
        if fname in existing:
            if existing[fname] != dest:  # a different selection moved the piece to another split
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(existing[fname], dest)
            continue
        jobs.append(dict(spec, dest=str(dest), piece_id=it["piece_id"], soundfont=soundfont))
    failures = {}
    if jobs:
        for res in _progress(run(_render_job, jobs), len(jobs), f"render {task}", progress):
            if not res["ok"]:
                failures[res["piece_id"]] = res["reason"]
                cache.add({"piece_id": res["piece_id"], "ok": False, "reason": res["reason"]})
    return failures


def _finalise(task, task_dir, items, summary_extra, args_record, seed, t0, cpu0):
    import soundfile as sf

    expected = {it["file_name"] for it in items}
    for split_dir in task_dir.iterdir():
        if split_dir.is_dir() and not split_dir.name.startswith("."):
            for f in split_dir.glob("*.flac"):
                if f.name not in expected:
                    f.unlink()
    for split in SPLITS:
        (task_dir / split).mkdir(parents=True, exist_ok=True)
    by_split = collections.defaultdict(list)
    total_seconds, total_bytes = 0.0, 0
    for it in items:
        path = task_dir / it["split"] / it["file_name"]
        info = sf.info(str(path))
        duration = round(info.frames / info.samplerate, 3)
        total_seconds += duration
        total_bytes += path.stat().st_size
        row = {"file_name": it["file_name"]}
        if task == "folk":
            row["label"] = it["label"]
        else:
            row["labels"] = it["labels"]
        row.update(
            piece_id=it["piece_id"],
            source=it["source"],
            title=it["title"],
            duration_seconds=duration,
            programs=it["programs"],
            tempo_bpm=it["render"]["bpm"],
            median_note_seconds=it["median_note_seconds"],
        )
        if task == "folk":
            row["fold"] = it["fold"]
        else:
            row["part_families"] = it["part_families"]
        by_split[it["split"]].append(row)
    for split in SPLITS:
        rows = sorted(by_split.get(split, []), key=lambda r: r["file_name"])
        _write_if_changed(
            task_dir / split / "metadata.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    names = FOLK_LABELS if task == "folk" else INSTRUMENT_LABELS
    problem_type = "single_label_classification" if task == "folk" else "multi_label_classification"
    _write_if_changed(
        task_dir / "labels.json", json.dumps({"problem_type": problem_type, "names": names}, indent=2) + "\n"
    )
    _write_if_changed(
        task_dir / "splits.json",
        json.dumps({it["piece_id"]: it["split"] for it in sorted(items, key=lambda i: i["piece_id"])}, indent=1)
        + "\n",
    )
    if task == "folk":
        _write_if_changed(
            task_dir / "folds.json",
            json.dumps({it["piece_id"]: it["fold"] for it in sorted(items, key=lambda i: i["piece_id"])}, indent=1)
            + "\n",
        )
    counts = {split: collections.Counter() for split in SPLITS}
    for it in items:
        for name in [it["label"]] if task == "folk" else it["labels"]:
            counts[it["split"]][name] += 1
    per_class = {name: {split: counts[split][name] for split in SPLITS} for name in names}
    for name in names:
        per_class[name]["total"] = sum(per_class[name][s] for s in SPLITS)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = {
        "task": task,
        "problem_type": problem_type,
        "names": names,
        "num_examples": {s: len(by_split.get(s, [])) for s in SPLITS},
        "examples_per_class": per_class,
        "total_audio_hours": round(total_seconds / 3600, 4),
        "total_bytes": total_bytes,
        "seed": seed,
        "arguments": args_record,
        "build_wall_seconds": round(time.time() - t0, 1),
        "build_cpu_seconds": round(time.process_time() + ru.ru_utime + ru.ru_stime - cpu0, 1),
        "sampling_rate": SAMPLING_RATE,
        "clip_seconds": CLIP_SECONDS,
        "soundfont": SOUNDFONT if not args_record.get("soundfont") else args_record["soundfont"],
        "fluidsynth": _fluidsynth_version(),
        "music21": __import__("music21").__version__,
        "parse_version": PARSE_VERSION,
        "render_version": RENDER_VERSION,
        **summary_extra,
    }
    write_json(task_dir / "manifest.json", manifest, indent=2, ensure_ascii=False)
    return manifest


def _consumed_per_group(consumed: list[dict], groups) -> dict[str, int]:
    counts = collections.Counter(c["source_name"] for c in consumed)
    return {g: counts.get(g, 0) for g in groups}


def _failure_table(groups, consumed_pos, cache):
    """Per group: candidates, attempted (the consumed prefix of its seeded order), failures by reason."""
    table = {}
    for g, cands in groups.items():
        attempted = cands[: consumed_pos[g]]
        reasons = collections.Counter(
            cache[c["piece_id"]].get("reason", "?") for c in attempted if not cache[c["piece_id"]]["ok"]
        )
        table[g] = {
            "candidates": len(cands),
            "attempted": len(attempted),
            "failed": sum(reasons.values()),
            "reasons": dict(sorted(reasons.items())),
        }
    return table


def candidate_order(task: str, seed: int) -> dict[str, list[dict]]:
    """The seeded order in which candidates are tried: {class (folk) or source (instruments): [candidate, ...]}."""
    cands = folk_candidates() if task == "folk" else instrument_candidates()
    return {g: [v[i] for i in _rng(seed, task, "order", g).permutation(len(v))] for g, v in cands.items()}


def _build_folk(output_dir, limit, seed, num_workers, progress, programs, soundfont, args_record):
    t0, cpu0 = time.time(), _cpu_now()
    task_dir = Path(output_dir) / "folk"
    _remove_stale_manifest(task_dir)
    groups = candidate_order("folk", seed)
    target = limit if limit is not None else min(len(v) for v in groups.values())
    cache = _ParseCache(task_dir / ".cache" / "parsed.jsonl")
    try:
        with _executor(num_workers) as run:  # closed (workers reaped) before the CPU time is read
            for _attempt in range(10):
                selected, consumed = _select_balanced("folk", groups, target, cache, run, progress)
                if min(len(v) for v in selected.values()) == 0:
                    raise RuntimeError("folk: a class has no usable tune")
                items = _plan_folk(selected, cache, seed, programs)
                if not _render_items("folk", task_dir, items, cache, run, progress, soundfont):
                    break
            else:
                raise RuntimeError("folk: renders keep failing; see .cache/parsed.jsonl")
        failures = _failure_table(groups, consumed, cache)
    finally:
        cache.close()
    extra = {
        "per_class_tunes": len(items) // len(FOLK_LABELS),
        "failures": failures,
        "sources": {k: v[0] for k, v in FOLK_CLASSES.items()},
        "rendering": {
            "programs": list(programs),
            "program_assignment": "the tune of rank r in every class gets the same program (balanced blocks)",
            "tempo": f"the median note lasts d s, d ~ U{FOLK_MEDIAN_NOTE_SECONDS}, "
            "the same d for rank r of every class",
            "melody": "first voice, top note of chords, ties merged, no grace notes/chord symbols/dynamics",
            "velocity": FOLK_VELOCITY,
            "clip": f"exactly {CLIP_SECONDS:g} s: the tune repeated until 30 s, {FOLK_FADE_SECONDS} s fade-out",
            "loudness": f"RMS {20 * math.log10(TARGET_RMS):.0f} dBFS, peak <= {PEAK_LIMIT}",
        },
    }
    return _finalise("folk", task_dir, items, extra, args_record, seed, t0, cpu0)


def _build_instruments(output_dir, limit, seed, num_workers, progress, soundfont, args_record):
    t0, cpu0 = time.time(), _cpu_now()
    task_dir = Path(output_dir) / "instruments"
    _remove_stale_manifest(task_dir)
    groups = candidate_order("instruments", seed)
    order = _interleave(groups)
    cache = _ParseCache(task_dir / ".cache" / "parsed.jsonl")
    try:
        with _executor(num_workers) as run:
            for _attempt in range(10):
                selected, consumed = _select_total("instruments", order, limit, cache, run, progress)
                if len(selected) < 3:
                    raise RuntimeError("instruments: fewer than 3 usable pieces")
                items = _plan_instruments(selected, cache, seed)
                if not _render_items("instruments", task_dir, items, cache, run, progress, soundfont):
                    break
            else:
                raise RuntimeError("instruments: renders keep failing; see .cache/parsed.jsonl")
        failures = _failure_table(groups, _consumed_per_group(order[:consumed], groups), cache)
    finally:
        cache.close()
    extra = {
        "failures": failures,
        "pieces_per_source": {g: sum(it["piece_id"].startswith(g + "-") for it in items) for g in groups},
        "label_cardinality": round(float(np.mean([len(it["labels"]) for it in items])), 3),
        "sources": {k: v[0] for k, v in INSTRUMENT_SOURCES.items()},
        "rendering": {
            "families": {f: [[p[0], p[1]] for p in progs] for f, progs in INSTRUMENT_FAMILIES.items()},
            "assignment": "k ~ U{1..parts} distinct families per piece, each used by >= 1 part; the program is "
            "drawn within the family among those whose range holds the part's median pitch",
            "tempo": f"the median note lasts d s, d ~ U{INSTRUMENT_MEDIAN_NOTE_SECONDS}",
            "velocity": INSTRUMENT_VELOCITY,
            "clip": f"first {CLIP_SECONDS:g} s (0.5 s fade-out when cut), "
            f"pieces under {MIN_PIECE_SECONDS:g} s dropped",
            "loudness": f"RMS {20 * math.log10(TARGET_RMS):.0f} dBFS, peak <= {PEAK_LIMIT}",
        },
    }
    return _finalise("instruments", task_dir, items, extra, args_record, seed, t0, cpu0)


def _remove_stale_manifest(task_dir: Path) -> None:
    """manifest.json marks a finished build: drop it while (re)building, `_finalise` writes it back."""
    with contextlib.suppress(FileNotFoundError):
        (task_dir / "manifest.json").unlink()


def _cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def check_arguments(tasks, limit=None, instruments_limit=None, folk_programs=DEFAULT_FOLK_PROGRAMS):
    """(task list, folk programs) of `build_tasks`'s arguments; a ValueError names a bad one.

    tasks: names or a comma-separated string; folk_programs: integers or a comma-separated string."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    for name, value in (("limit", limit), ("instruments_limit", instruments_limit)):
        if value is not None and int(value) < 3:
            raise ValueError(f"{name} must be >= 3 (one item per split), got {value}")
    if isinstance(folk_programs, str):
        folk_programs = [p for p in folk_programs.split(",") if p.strip()]
    try:
        folk_programs = tuple(int(p) for p in folk_programs)
    except ValueError:
        raise ValueError(f"folk_programs must be General MIDI programs 0-127, got {folk_programs}") from None
    if not folk_programs or any(not 0 <= p <= 127 for p in folk_programs):
        raise ValueError(f"folk_programs must be General MIDI programs 0-127, got {folk_programs}")
    return tasks, folk_programs


def build_tasks(
    output_dir,
    tasks=TASKS,
    limit=None,
    seed=0,
    num_workers=None,
    progress=True,
    instruments_limit=None,
    folk_programs=DEFAULT_FOLK_PROGRAMS,
    soundfont=SOUNDFONT,
) -> dict:
    """Build the labeled tasks under `output_dir/<task>/`; returns {task: manifest}.

    limit: tunes per class for ``folk`` and pieces in total for ``instruments`` (None = full build);
    instruments_limit overrides it for ``instruments``.  Re-running reuses the parse cache and the
    finished renders; the same seed gives the same selection, splits, programs and audio.
    """
    tasks, folk_programs = check_arguments(tasks, limit, instruments_limit, folk_programs)
    check_renderer(soundfont)
    num_workers = num_workers or _default_workers()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    args_record = {
        "tasks": list(tasks),
        "limit": limit,
        "instruments_limit": instruments_limit,
        "seed": seed,
        "folk_programs": list(folk_programs),
        "soundfont": soundfont if soundfont != SOUNDFONT else None,
    }
    summary = {}
    if "folk" in tasks:
        summary["folk"] = _build_folk(
            output_dir, limit, seed, num_workers, progress, folk_programs, soundfont, args_record
        )
    if "instruments" in tasks:
        lim = instruments_limit if instruments_limit is not None else limit
        summary["instruments"] = _build_instruments(
            output_dir, lim, seed, num_workers, progress, soundfont, args_record
        )
    return summary


def format_summary(summary: dict) -> str:
    lines = []
    for task, man in summary.items():
        lines.append(
            f"{task}: {sum(man['num_examples'].values())} clips, {man['total_audio_hours'] * 60:.1f} min, "
            f"{man['total_bytes'] / 1e6:.1f} MB, {man['build_wall_seconds']:.0f} s wall / "
            f"{man['build_cpu_seconds']:.0f} s CPU"
        )
        lines.append(f"  {'class':10s} " + " ".join(f"{s:>10s}" for s in (*SPLITS, "total")))
        for name, row in man["examples_per_class"].items():
            lines.append(f"  {name:10s} " + " ".join(f"{row[s]:10d}" for s in (*SPLITS, "total")))
        for group, fail in man["failures"].items():
            if fail["failed"]:
                lines.append(f"  failed {group}: {fail['failed']} of {fail['attempted']} attempted {fail['reasons']}")
    return "\n".join(lines)


@dataclass
class BuildTasksArguments:
    """Options of `musicoder-data build-tasks` (the keyword arguments of `build_tasks`)."""

    output_dir: str = field(default="data/tasks", metadata={"help": "where the <task>/ folders go"})
    tasks: str = field(default=",".join(TASKS), metadata={"help": "comma-separated subset of: " + ",".join(TASKS)})
    limit: int | None = field(
        default=None,
        metadata={"help": "tunes per class for folk, pieces in total for instruments (unset: the full build)"},
    )
    instruments_limit: int | None = field(
        default=None, metadata={"help": "pieces for instruments (overrides --limit for that task)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the selection, the splits, the programs and the tempi"})
    num_workers: int | None = field(
        default=None, metadata={"help": "parsing and rendering processes (unset: all cores)"}
    )
    folk_programs: str = field(
        default=",".join(map(str, DEFAULT_FOLK_PROGRAMS)),
        metadata={"help": "comma-separated General MIDI programs (0-based) shared by all folk classes"},
    )
    soundfont: str = field(default=SOUNDFONT, metadata={"help": "the General MIDI soundfont fluidsynth renders with"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bars"})


def main(argv=None) -> int:
    parser = command_line_parser(
        BuildTasksArguments,
        prog="musicoder-data build-tasks",
        description="Render the labeled folk-tradition (single-label) and instrument-family (multi-label) "
        "tasks from the music21 corpus with fluidsynth, as Hugging Face audiofolder datasets.",
    )
    args = parse_command_line(parser, argv)
    try:
        check_arguments(args.tasks, args.limit, args.instruments_limit, args.folk_programs)
    except ValueError as err:
        parser.error(str(err))  # bad usage: exit status 2
    try:
        summary = build_tasks(
            args.output_dir,
            tasks=args.tasks,
            limit=args.limit,
            seed=args.seed,
            num_workers=args.num_workers,
            progress=not args.no_progress,
            instruments_limit=args.instruments_limit,
            folk_programs=[int(p) for p in args.folk_programs.split(",") if p.strip()],
            soundfont=args.soundfont,
        )
    except (ValueError, RuntimeError) as err:
        print(f"build-tasks: error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
