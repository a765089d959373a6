"""Build two labeled "which game is this soundtrack clip from" folders from Debian game-music packages that the
pre-training corpus (musicoder_hf/builders/corpus.py PACKAGES) never uses.

    python benchmarks/unseen_game_folders.py [--output_dir data/unseen]     # about 2 min and 1.8 GB of downloads

Output (re-running rebuilds both folders from scratch; downloaded .debs are cached in data/unseen/.cache):

    data/unseen/games_a/{train,validation,test}/<label>/<label>-<track>_<slot>.flac   (for tuning defaults)
    data/unseen/games_b/{train,validation,test}/<label>/...                          (held out, final figure)
    data/unseen/games_{a,b}/clips.csv, README.md

Rules: a track is a music file of the package that lasts >= 60 s (byte-identical files are kept once). Each track
is downmixed to mono; 30 s clips are cut back to back starting at 5 s (slot k covers [5 + 30k, 35 + 30k) s); clips
with RMS below -50 dBFS are skipped; at most 6 clips per track. Clips are resampled to 44.1 kHz if needed and
written as 16-bit FLAC. Per game, the clip budget (64) is filled round-robin over the tracks (every track's 1st
clip, then every track's 2nd clip, ...), so long tracks do not dominate. Tracks are split by track (never a clip
of one track in two splits): tracks are grouped into "families" (trailing digits / _remix / _old / _sd variants of
one piece share a family), families are put in a seeded order (numpy default_rng(0) per game) and about 20 % of
the tracks go to validation, 20 % to test (at least 1 each), the rest to train.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from musicoder_hf.builders import corpus


SEED = 0
SR = corpus.SAMPLING_RATE  # 44100
SKIP_SECONDS = 5.0
CLIP_SECONDS = 30.0
MAX_CLIPS_PER_TRACK = 6
CLIP_BUDGET_PER_GAME = 64
MIN_TRACK_SECONDS = 60.0
SILENCE_DBFS = -50.0
VALIDATION_FRACTION = TEST_FRACTION = 0.2

# label -> (package, music path patterns inside the package, patterns to leave out, licence of the music)
GAMES = {
    "games_a": {
        "hyperrogue": ("hyperrogue-music", ["usr/share/hyperrogue/music/*.ogg"], [],
                       "CC-BY-SA-3.0 (music by Shawn Parrotte, Lincoln Domina, Will Savino; DEP-5 stanzas music/*)"),
        "pushover": ("pushover-data", ["usr/share/pushover/themes/*.ogg"], [],
                     "GPL-3+ (DEP-5 Files: *)"),
        "hedgewars": ("hedgewars-data", ["usr/share/games/hedgewars/Data/Music/*.ogg"],
                      ["*_sd.ogg", "*/sdmusic.ogg"],  # sudden-death variants of other tracks
                      "GPL-2 (DEP-5 Files: *)"),
        "drascula": ("drascula-music", ["usr/share/scummvm/drascula/audio/*.ogg"], [],  # de/en/es/fr/it = copies
                     "Drascula-License (BSD-like, DFSG-free; Alcachofa Soft)"),
    },
    "games_b": {
        "openclonk": ("openclonk-data", ["usr/share/games/openclonk/Music.ocg/*.ogg"], [],
                      "CC-BY-3.0 or CC0 (game content; music by K-Pone per Music.ocg/authors.txt)"),
        "marsshooter": ("marsshooter-data", ["usr/share/games/marsshooter/audio/music/*.ogg",
                                             "usr/share/games/marsshooter/audio/menu.ogg",
                                             "usr/share/games/marsshooter/audio/tutorial.ogg"], [],
                        "CC-BY-SA-3.0 (music by Obsidian Shell; DEP-5 data/audio/music/*, menu.ogg, tutorial.ogg)"),
        "supertux": ("supertux-data", ["usr/share/games/supertux2/music/*.ogg"], [],
                     "GPL-2+ (DEP-5 Files: data/music/*)"),
        "freedroidrpg": ("freedroidrpg-data", ["usr/share/freedroidrpg/data/sound/music/*.ogg"], [],
                         "GPL-2+ (DEP-5 Files: *)"),
    },
}
NO_FAMILIES = {"drascula"}  # its files are track1..track31: the numbers are the names, not variants
FORBIDDEN = ("singularity-music", "colobot-common-sounds", "planetblupi-music-ogg", "nexuiz-music",
             "warzone2100-music", "wesnoth", "ufoai-music")


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def family(stem: str) -> str:
    """Variants of one piece (forest2/forest3, airship_2/airship_remix, cave_old, olympics_sd) share a family."""
    s = stem.lower()
    while True:
        t = re.sub(r"([_-]?(\d+|remix|old|sd))$", "", s)
        if t == s or not t:
            return s
        s = t


def open_reader(path: Path):
    return corpus._Reader(str(path))  # soundfile (Ogg Vorbis/Opus), ffmpeg fall-back; mono float32


def slot_rms_db(reader) -> list[float]:
    """RMS (dBFS) of each candidate 30 s slot of the track (mono, native rate)."""
    sr = reader.samplerate
    out = []
    k = 0
    while True:
        start = round((SKIP_SECONDS + k * CLIP_SECONDS) * sr)
        length = round(CLIP_SECONDS * sr)
        if start + length > reader.frames:
            break
        y = reader.read(start, length)
        if len(y) < length:  # header promised more than the stream holds
            break
        rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
        out.append(20 * np.log10(max(rms, 1e-12)))
        k += 1
    return out


def list_tracks(label: str, package: str, patterns: list[str], exclude: list[str],
                cache: Path) -> tuple[list[dict], str, str]:
    assert not any(package.startswith(f) for f in FORBIDDEN), package
    root, version, _ = corpus.fetch_package(package, cache)
    copyright_file = root / "usr/share/doc" / package / "copyright"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    tracks, seen = [], set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        if not any(fnmatch.fnmatchcase(rel, p) for p in patterns) or any(fnmatch.fnmatchcase(rel, p) for p in exclude):
            continue
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        info = sf.info(str(path))
        seconds = info.frames / info.samplerate
        if seconds < MIN_TRACK_SECONDS:
            continue
        stem = path.stem.lstrip("@")
        tracks.append({"label": label, "package": package, "source_file": rel, "path": path,
                       "slug": slugify(stem), "seconds": seconds,
                       "family": slugify(stem) if label in NO_FAMILIES else family(stem)})
    slugs = [t["slug"] for t in tracks]
    for t in tracks:  # equal names in different folders (supertux): prefix the folder
        if slugs.count(t["slug"]) > 1:
            t["slug"] = slugify(Path(t["source_file"]).parent.name + "-" + Path(t["source_file"]).stem)
    return tracks, version, copyright_file.read_text(errors="replace")


def assign_splits(tracks: list[dict]) -> None:
    """~60/20/20 by track, whole families together, seeded order."""
    families: dict[str, list[dict]] = {}
    for t in sorted(tracks, key=lambda t: t["source_file"]):
        families.setdefault(t["family"], []).append(t)
    names = sorted(families)
    order = [names[i] for i in np.random.default_rng(SEED).permutation(len(names))]
    n = len(tracks)
    want = {"validation": max(1, round(VALIDATION_FRACTION * n)), "test": max(1, round(TEST_FRACTION * n))}
    got = {"validation": 0, "test": 0}
    for name in order:  # a family goes to test/validation only if it fits in what that split still wants
        size = len(families[name])
        split = next((s for s in ("test", "validation") if got[s] + size <= want[s]), "train")
        for t in families[name]:
            t["split"] = split
        if split != "train":
            got[split] += size
    assert all(got.values()), got


def choose_clips(tracks: list[dict]) -> None:
    """Round-robin over tracks (seeded order) until the per-game budget is used: slot lists are non-silent slots."""
    order = [tracks[i] for i in np.random.default_rng(SEED).permutation(len(tracks))]
    for t in tracks:
        t["chosen"] = []
    left = CLIP_BUDGET_PER_GAME
    for r in range(MAX_CLIPS_PER_TRACK):
        for t in order:
            if left and r < len(t["slots"]):
                t["chosen"].append(t["slots"][r])
                left -= 1


def write_clip(reader, slot: int, target: Path) -> None:
    sr = reader.samplerate
    y = reader.read(round((SKIP_SECONDS + slot * CLIP_SECONDS) * sr), round(CLIP_SECONDS * sr))
    y = corpus._resample(y, sr)
    n = round(CLIP_SECONDS * SR)
    y = np.pad(y, (0, max(0, n - len(y))))[:n]  # exactly 30 s (resampling may be off by a sample)
    y = np.clip(y, -1.0, 1.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(target), y, SR, format="FLAC", subtype="PCM_16")


def build(output_dir: Path, folder: str, games: dict) -> None:
    out = output_dir / folder
    if out.exists():
        shutil.rmtree(out)
    rows, packages = [], []
    for label, (package, patterns, exclude, licence) in games.items():
        tracks, version, _ = list_tracks(label, package, patterns, exclude, output_dir / ".cache")
        packages.append((label, package, version, licence, len(tracks)))
        assign_splits(tracks)
        for t in tracks:
            with open_reader(t["path"]) as reader:
                t["slots"] = [k for k, db in enumerate(slot_rms_db(reader)) if db >= SILENCE_DBFS]
                t["slots"] = t["slots"][:MAX_CLIPS_PER_TRACK]
        choose_clips(tracks)
        for t in sorted(tracks, key=lambda t: t["source_file"]):
            if not t["chosen"]:
                continue
            with open_reader(t["path"]) as reader:
                for slot in t["chosen"]:
                    name = f"{t['split']}/{label}/{label}-{t['slug']}_{slot:02d}.flac"
                    write_clip(reader, slot, out / name)
                    rows.append({"file_name": name, "label": label, "split": t["split"], "track": t["slug"],
                                 "family": t["family"], "package": package, "source_file": t["source_file"],
                                 "start_seconds": SKIP_SECONDS + slot * CLIP_SECONDS,
                                 "track_seconds": round(t["seconds"], 2)})
        print(f"{folder}/{label}: {package} {version}, {len(tracks)} tracks, "
              f"{sum(len(t['chosen']) for t in tracks)} clips", flush=True)
    with open(out / "clips.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_readme(out, folder, packages, rows)


def write_readme(out: Path, folder: str, packages: list, rows: list[dict]) -> None:
    splits = ("train", "validation", "test")
    purpose = ("for tuning defaults" if folder == "games_a" else "held out for the final figure")
    lines = [f"# {folder}: which game is this soundtrack clip from ({purpose})", "",
             "Real game music from Debian packages that the pre-training corpus does not use. Mono, 44.1 kHz, "
             "16-bit FLAC, clips of exactly 30 s cut back to back from each track after skipping its first 5 s "
             f"(at most {MAX_CLIPS_PER_TRACK} per track, silent clips below {SILENCE_DBFS:g} dBFS RMS skipped, "
             f"tracks >= {MIN_TRACK_SECONDS:g} s only, budget {CLIP_BUDGET_PER_GAME} clips per game filled "
             "round-robin over tracks). Split by track (variants of one piece kept together), ~60/20/20, seed 0. "
             "`clips.csv` lists every clip with its source track and start time.", "",
             "Layout: `<split>/<label>/<label>-<track>_<slot>.flac`; load with "
             f"`musicoder_hf.data.labeled.load_labeled_dataset('data/unseen/{folder}')`.", "",
             "## Packages", "", "| label | package | version | music licence (/usr/share/doc/<pkg>/copyright) | tracks |",
             "|---|---|---|---|---|"]
    for label, package, version, licence, n in packages:
        lines.append(f"| {label} | {package} | {version} | {licence} | {n} |")
    lines += ["", "## Tracks / clips per split", "", "| label | " + " | ".join(splits) + " | total |",
              "|---|---|---|---|---|"]
    for label, *_ in packages:
        cells, tt, tc = [], 0, 0
        for s in splits:
            sel = [r for r in rows if r["label"] == label and r["split"] == s]
            nt = len({r["track"] for r in sel})
            cells.append(f"{nt} / {len(sel)}")
            tt, tc = tt + nt, tc + len(sel)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tt} / {tc} |")
    lines += ["", "(tracks / clips)", "", "## Tracks per split", ""]
    for label, *_ in packages:
        for s in splits:
            names = sorted({r["track"] for r in rows if r["label"] == label and r["split"] == s})
            lines.append(f"- {label} {s}: {', '.join(names)}")
    lines += ["", "Built by `python benchmarks/unseen_game_folders.py` (musicoder-hf repository).", ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="data/unseen", help="where games_a/ and games_b/ are written")
    output_dir = Path(parser.parse_args(argv).output_dir)
    labels = [label for games in GAMES.values() for label in games]
    assert len(set(labels)) == 8 and len({g[0] for games in GAMES.values() for g in games.values()}) == 8
    for folder, games in GAMES.items():
        build(output_dir, folder, games)


if __name__ == "__main__":
    main()
