"""Unlabeled pre-training corpus: real game soundtracks from Debian packages, cut into 10-35 s clips.

`musicoder-data build-corpus --output_dir data/corpus [--minutes 60]` (or `build_corpus(...)` from Python)

1. fetches each Debian package with `apt-get download` into a cache folder and unpacks it with `dpkg-deb -x`
   (nothing is installed into the system; a package that *is* installed is read from `/` instead);
2. keeps the music files only (per-package rule in `PACKAGES`; tracks inside `.pk3` zip archives are read in place)
   and skips the `_enhanced` / `_fast` near-duplicate versions;
3. decodes each track (soundfile: Ogg Vorbis and Opus; the `ffmpeg` program as a fall-back), downmixes to mono,
   cuts consecutive clips whose lengths are drawn uniformly in [10, 35] s (MusiCoder paper, section 4.1) from a
   generator seeded by `(seed, track_id)`, drops a final remainder shorter than 10 s, resamples each clip to
   44.1 kHz (soxr) and skips silent clips (RMS below -60 dBFS);
4. writes 16-bit FLAC in the Hugging Face `audiofolder` layout::

       output_dir/train/<package>/<track-slug>_<index>.flac    + train/metadata.jsonl
       output_dir/validation/<package>/<track-slug>_<index>.flac + validation/metadata.jsonl
       output_dir/manifest.json                                   totals, licences, arguments, build time
       output_dir/licences/<package>.copyright                    the packages' copyright files
       output_dir/.build/                                         per-track done markers (resume state)

   so that `datasets.load_dataset("audiofolder", data_dir=output_dir)` reads it like any Hub dataset.

Splits are assigned per track (the clips of a track never straddle splits): the tracks of each package are put in a
seeded order and every `validation_every`-th track of that order, starting with the second, is held out.

Small builds (`--minutes N`) take a fixed, diverse sampler instead of whole packages: the first
`min(len(packages), 1 + ceil(N / 30))` packages of `PACKAGES` (smallest downloads first) are visited round-robin,
track by track in each package's seeded order, and from each track only the clips that start within its first 90 s
(`sample_seconds_per_track`) are taken; the build stops as soon as the planned clips reach N minutes (if the sampler
runs dry, a second round takes the rest of the same tracks). The plan depends only on the seed and the packages'
contents, so `--minutes 30` after `--minutes 10` reuses every clip of the first run.

Idempotent and resumable: every clip is written atomically (temporary name, then rename) and every track gets a
done marker (written atomically after its clips); a later run skips tracks whose marker covers the clips it needs and
whose files all exist, re-creates missing clips only, and rewrites metadata and manifest at the end from everything
that is finished in `output_dir` (a smaller `--minutes` into a bigger build keeps the bigger build; files that no
finished track owns, such as temporary files of a killed run, are deleted). Ctrl-C or SIGTERM stops the workers with
the run; one run at a time may write an `output_dir` (a lock file); an `output_dir` is bound to its seed and clip
lengths (`--overwrite` starts again).
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..utils import atomic_write_text, command_line_parser, derive_seed, parse_command_line, write_json

SAMPLING_RATE = 44_100
AUDIO_EXTENSIONS = (".ogg", ".opus", ".oga", ".flac", ".wav", ".mp3")
ARCHIVE_EXTENSIONS = (".pk3", ".zip")
NEAR_DUPLICATE = re.compile(r"[_-](enhanced|fast)$", re.IGNORECASE)
BUILD_FORMAT_VERSION = 1
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class PackageSpec:
    """Where a package keeps its music. `music` are fnmatch patterns (`*` crosses `/`) on the track's logical path:
    the path inside the package, and for a track inside a `.pk3`/`.zip` archive the archive's folder joined with the
    member's path (the game engine overlays the archive onto that folder)."""

    name: str
    music: tuple[str, ...]
    minutes: float  # approximate music minutes after near-duplicate removal (documentation / planning hint)
    note: str = ""


# Order matters: `--minutes` builds use the first packages (smallest downloads first).
PACKAGES: dict[str, PackageSpec] = {
    spec.name: spec
    for spec in (
        PackageSpec("singularity-music", ("usr/share/games/singularity/music/*.ogg",), 64,
                    "Endgame: Singularity, 16 tracks incl. the win/lose pieces, Ogg Vorbis 48 kHz"),
        PackageSpec("colobot-common-sounds", ("usr/share/games/colobot/music/*.ogg",), 66,
                    "Colobot: music is the Ogg files in .../colobot/music/; the 83 .wav files in .../colobot/sounds/ "
                    "are sound effects and are left out"),
        PackageSpec("planetblupi-music-ogg", ("usr/share/planetblupi/music/*.ogg",), 163,
                    "Planet Blupi: 10 long loops (10-29 min each)"),
        PackageSpec("nexuiz-music", ("usr/share/games/nexuiz/data/sound/cdtracks/*.ogg",), 84,
                    "Nexuiz: tracks inside data/music.pk3 (zip)"),
        PackageSpec("warzone2100-music", ("usr/share/games/warzone2100/music/*.opus",), 227,
                    "Warzone 2100: three albums, Opus 48 kHz; *_enhanced.opus re-masters are near-duplicates"),
        PackageSpec("wesnoth-1.16-music", ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",), 127,
                    "Battle for Wesnoth 1.16"),
        PackageSpec("ufoai-music", ("usr/share/games/ufoai/base/music/*.ogg",), 240,
                    "UFO: Alien Invasion: tracks inside base/0music.pk3 (zip)"),
    )
}
DEFAULT_MUSIC_PATTERNS = ("*/music/*", "*/cdtracks/*")  # for a package not in PACKAGES


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("MUSICODER_CORPUS_CACHE", os.path.join(base, "musicoder-hf", "corpus")))


# ----------------------------------------------------------------------------------------------------------------
# Fetching packages


def _run(cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=False, capture_output=True, text=True, **kwargs)


def _installed_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    proc = _run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package])
    if proc.returncode != 0 or not proc.stdout.startswith("install ok installed"):
        return None
    return proc.stdout.split("\t", 1)[1]


def _cached_deb(package: str, debs: Path) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def fetch_package(package: str, cache_dir: Path) -> tuple[Path, str, str]:
    """Return (root folder holding the package's files, version, where it came from).

    An installed package is read from `/`; otherwise `apt-get download` fetches the .deb into `cache_dir/debs`
    (reused when present: a .deb placed there by hand works too) and `dpkg-deb -x` unpacks it into
    `cache_dir/extracted/<deb name>/`. Both steps are atomic (temporary folder, then rename)."""
    version = _installed_version(package)
    if version is not None and Path("/usr/share/doc", package, "copyright").exists():
        return Path("/"), version, "installed"
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(package, debs)
    origin = "cache"
    if deb is None:
        if shutil.which("apt-get") is None:
            raise RuntimeError(
                f"{package}: apt-get is not available. Put {package}_*.deb into {debs} by hand "
                "(from https://packages.debian.org) or run on Debian/Ubuntu."
            )
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{package}-", dir=debs))
        try:
            proc = _run(["apt-get", "download", package], cwd=partial)
            got = sorted(partial.glob(f"{package}_*.deb"))
            if proc.returncode != 0 or not got:
                hint = " (run `apt-get update` first?)" if "Unable to locate" in proc.stderr else ""
                raise RuntimeError(f"apt-get download {package} failed{hint}:\n{proc.stderr.strip()}")
            deb = debs / got[0].name
            os.replace(got[0], deb)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        origin = "apt-get download"
    proc = _run(["dpkg-deb", "-f", str(deb), "Version"])
    version = proc.stdout.strip() if proc.returncode == 0 else deb.name.split("_")[1]
    root = cache_dir / "extracted" / deb.name[: -len(".deb")]
    if not (root / ".complete").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".partial-{package}-", dir=root.parent))
        try:
            proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
            if proc.returncode != 0:
                raise RuntimeError(f"dpkg-deb -x {deb} failed:\n{proc.stderr.strip()}")
            (tmp / ".complete").write_text(version + "\n")
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root, version, origin


# ----------------------------------------------------------------------------------------------------------------
# Licences


def _dep5_stanzas(text: str) -> list[tuple[list[str], str]] | None:
    """Parse a machine-readable (DEP-5) debian/copyright into [(file patterns, short licence name)]."""
    if not re.match(r"\s*Format:", text):
        return None
    stanzas = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip()] = value.strip()
        if "Files" in fields and "License" in fields:
            licence = fields["License"].split("\n", 1)[0].strip()
            stanzas.append((fields["Files"].split(), licence))
    return stanzas


def _dep5_match(pattern: str, logical_path: str) -> bool:
    # DEP-5 patterns are relative to the source tree; installed paths carry a prefix (usr/share/games/...), so a
    # pattern matches the logical path or any trailing part of it. `*` crosses `/` in both DEP-5 and fnmatch.
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(logical_path, pattern) or fnmatch.fnmatchcase(logical_path, "*/" + pattern)


_GPL = re.compile(
    r"GNU\s+General\s+Public\s+License[,;]?\s+(?:as\s+published\s+by\s+the\s+Free\s+"
    r"Software\s+Foundation[;,]?\s+)?(?:either\s+)?version\s+(\d)(?:\s+of\s+the\s+License)?[,;]?"
    r"(\s*(?:or\s*\(?at\s+your\s+option\)?\s*any\s+later\s+version|or\s+later|or\s+any\s+later))?",
    re.IGNORECASE,
)
_CC = re.compile(r"(?:CC[- ]BY[- ]SA[- ]?|Attribution-ShareAlike\s+)(\d\.\d)(\s*\((?:[^)]*)later version\))?",
                 re.IGNORECASE)
_CC_BY = re.compile(r"(?:CC[- ]BY[- ]|Creative\s+Commons\s+Attribution\s+)(\d\.\d)", re.IGNORECASE)


def licence_from_text(text: str) -> str | None:
    """Short SPDX-like licence name from a free-form licence statement (first statement of each kind wins);
    a text that grants both a Creative Commons and a GPL licence is dual-licensed: "A OR B"."""
    found = []
    cc = _CC.search(text)
    if cc:
        found.append((cc.start(), f"CC-BY-SA-{cc.group(1)}" + ("+" if cc.group(2) else "")))
    elif _CC_BY.search(text):
        m = _CC_BY.search(text)
        found.append((m.start(), f"CC-BY-{m.group(1)}"))
    gpl = _GPL.search(text)
    if gpl:
        found.append((gpl.start(), f"GPL-{gpl.group(1)}" + ("+" if gpl.group(2) else "")))
    if not found:
        return None
    return " OR ".join(name for _, name in sorted(found))


def licence_for_track(logical_path: str, copyright_text: str, folder_licence_text: str | None = None) -> str:
    """The licence of one track: a licence file next to it (e.g. Warzone 2100's per-album license.txt) wins,
    then the last matching stanza of a DEP-5 copyright file, then the free-form copyright text."""
    if folder_licence_text:
        found = licence_from_text(folder_licence_text)
        if found:
            return found
    stanzas = _dep5_stanzas(copyright_text)
    if stanzas is not None:
        licence = None
        for patterns, name in stanzas:
            if any(_dep5_match(p, logical_path) for p in patterns):
                licence = name
        if licence:
            return licence
    return licence_from_text(copyright_text) or "unknown (see licences/)"


# ----------------------------------------------------------------------------------------------------------------
# Tracks


@dataclass
class Track:
    package: str
    track: str  # the file's name without extension
    slug: str
    track_id: str  # "<package>/<slug>"
    source_file: str  # logical path inside the package
    path: str  # file on disk (the audio file, or the archive holding it)
    member: str | None  # member inside the archive
    licence: str
    split: str = "train"
    order: int = 0  # position in the package's seeded order


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"


def scan_package(package: str, root: Path, seed: int = 0, validation_every: int = 20) -> dict:
    """List a package's music tracks (seeded order, split, licence) and what was left out."""
    spec = PACKAGES.get(package)
    patterns = spec.music if spec else DEFAULT_MUSIC_PATTERNS
    doc = root / "usr/share/doc" / package / "copyright"
    copyright_text = doc.read_text(errors="replace") if doc.exists() else ""
    if root == Path("/"):  # an installed package: only the files it owns
        proc = _run(["dpkg-query", "-L", package])
        files = sorted(Path(line.strip()) for line in proc.stdout.splitlines() if line.strip().startswith("/usr/share/"))
    else:
        files = sorted((root / "usr/share").rglob("*"))
    candidates = []  # (logical path, path on disk, member)
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel.startswith("usr/share/doc/") or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in AUDIO_EXTENSIONS:
            candidates.append((rel, path, None))
        elif suffix in ARCHIVE_EXTENSIONS and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in sorted(archive.namelist()):
                    if name.lower().endswith(AUDIO_EXTENSIONS):
                        candidates.append((f"{Path(rel).parent.as_posix()}/{name}", path, name))
    music, near_duplicates, other_audio = [], [], []
    for logical, path, member in candidates:
        if not any(fnmatch.fnmatchcase(logical, p) for p in patterns):
            other_audio.append(logical)
        elif NEAR_DUPLICATE.search(Path(logical).stem):
            near_duplicates.append(logical)
        else:
            music.append((logical, path, member))
    slugs = [_slugify(Path(logical).stem) for logical, _, _ in music]
    for i, (logical, _, _) in enumerate(music):  # disambiguate equal stems with their folder
        if slugs.count(slugs[i]) > 1:
            slugs[i] = _slugify(Path(logical).parent.name + "-" + Path(logical).stem)
    tracks = []
    folder_licences: dict[Path, str | None] = {}
    for (logical, path, member), slug in zip(music, slugs):
        folder = path.parent
        if member is None and folder not in folder_licences:
            texts = [p.read_text(errors="replace") for p in sorted(folder.iterdir())
                     if p.is_file() and re.match(r"(licen[cs]e|copying)(\.txt|\.md)?$", p.name, re.IGNORECASE)]
            folder_licences[folder] = "\n".join(texts) or None
        licence = licence_for_track(logical, copyright_text, folder_licences.get(folder) if member is None else None)
        tracks.append(Track(package, Path(logical).stem, slug, f"{package}/{slug}", logical, str(path), member,
                            licence))
    order = np.random.default_rng([seed, derive_seed(package, bits=64)]).permutation(len(tracks))
    tracks = [tracks[i] for i in order]
    for position, track in enumerate(tracks):
        track.order = position
        held_out = validation_every > 0 and len(tracks) > 1 and position % validation_every == 1
        track.split = "validation" if held_out else "train"
    return {"tracks": tracks, "near_duplicates": near_duplicates, "other_audio": other_audio,
            "copyright": copyright_text, "folder_licences": {str(k): v for k, v in folder_licences.items() if v}}


# ----------------------------------------------------------------------------------------------------------------
# Decoding and clips


class _Reader:
    """Sequential/seekable mono float32 reader at the file's native rate: soundfile, or ffmpeg as a fall-back."""

    def __init__(self, path: str, member: str | None = None):
        self._data = None
        self._sf = None
        source = path
        raw = None
        if member is not None:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(member)
            source = io.BytesIO(raw)
        try:
            self._sf = sf.SoundFile(source)
            self.samplerate = self._sf.samplerate
            self.frames = self._sf.frames
            self.decoder = "soundfile"
        except Exception:  # noqa: BLE001 - anything soundfile cannot open goes to ffmpeg
            self._data = _ffmpeg_decode(path if raw is None else raw)
            self.samplerate = SAMPLING_RATE
            self.frames = len(self._data)
            self.decoder = "ffmpeg"

    def read(self, start: int, frames: int) -> np.ndarray:
        if self._data is not None:
            return self._data[start : start + frames]
        self._sf.seek(start)  # libsndfile seeks are sample-exact for Vorbis and Opus (checked in the tests)
        return _downmix(self._sf.read(frames, dtype="float32", always_2d=True))

    def close(self):
        if self._sf is not None:
            self._sf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _downmix(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) channel mean, by adding whole columns: numpy's `x.mean(axis=1)` is slow on so
    short an axis."""
    y = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        y += x[:, c]
    if x.shape[1] > 1:
        y *= np.float32(1.0 / x.shape[1])
    return y


def _ffmpeg_decode(source) -> np.ndarray:
    """Decode anything ffmpeg reads to mono float32 at 44.1 kHz (`-ac 1` averages the channels)."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("soundfile cannot decode this file and the `ffmpeg` program is not installed")
    is_bytes = isinstance(source, (bytes, bytearray))
    cmd = ["ffmpeg", "-nostdin" if not is_bytes else "-hide_banner", "-v", "error", "-i",
           "pipe:0" if is_bytes else str(source), "-f", "f32le", "-ac", "1", "-ar", str(SAMPLING_RATE), "pipe:1"]
    proc = subprocess.run(cmd, check=False, input=source if is_bytes else None, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not decode {source if not is_bytes else 'archive member'}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def clip_plan(track_id: str, frames: int, samplerate: int, seed: int = 0, min_clip_seconds: float = 10,
              max_clip_seconds: float = 35) -> list[tuple[int, int]]:
    """Consecutive clips [(start frame, frames)] at the native rate: lengths uniform in [min, max] s from a generator
    seeded by (seed, track_id) alone; the last clip is cut short at the end of the track if at least `min` s remain,
    a shorter remainder is dropped."""
    rng = np.random.default_rng([seed, derive_seed(track_id, bits=64)])
    minimum = math.ceil(min_clip_seconds * samplerate)
    clips, start = [], 0
    while frames - start >= minimum:
        length = round(rng.uniform(min_clip_seconds, max_clip_seconds) * samplerate)
        length = max(minimum, min(length, frames - start))
        clips.append((start, length))
        start += length
    return clips


def _resample(y: np.ndarray, samplerate: int) -> np.ndarray:
    if samplerate == SAMPLING_RATE:
        return y
    try:
        import soxr  # what librosa.resample(res_type="soxr_hq") calls, without librosa's import time
    except ImportError:  # pragma: no cover
        import librosa

        return librosa.resample(y, orig_sr=samplerate, target_sr=SAMPLING_RATE, res_type="soxr_hq")
    return soxr.resample(y, samplerate, SAMPLING_RATE, quality="soxr_hq").astype(np.float32, copy=False)


def _clip_name(track: dict, index: int) -> str:
    return f"{track['package']}/{track['slug']}_{index:03d}.flac"


def _marker_path(output_dir: Path, track: dict) -> Path:
    return output_dir / ".build" / "tracks" / track["package"] / f"{track['slug']}.json"


def _marker_ok(marker: dict | None, output_dir: Path, track: dict, params: dict, count: int | None) -> bool:
    if not marker or marker.get("params") != params or marker.get("split") != track["split"]:
        return False
    if not marker["complete"] and (count is None or marker["covered"] < count):
        return False
    split_dir = output_dir / track["split"]
    return all((split_dir / clip["file_name"]).exists() for clip in marker["clips"])


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_track(job: dict) -> dict:
    """Write the first `count` clips of one track (all of them when count is None); reuse clips already on disk.
    Runs in a worker process; returns counters for the run's report."""
    track, params, output_dir = job["track"], job["params"], Path(job["output_dir"])
    count = job["count"]
    marker_path = _marker_path(output_dir, track)
    marker = _read_marker(marker_path)
    result = {"track_id": track["track_id"], "decoded": False, "written": 0, "reused": 0, "silent": 0}
    if _marker_ok(marker, output_dir, track, params, count):
        result["reused"] = len(marker["clips"])
        return result
    if marker and marker.get("params") == params and marker.get("split") == track["split"]:
        # never shrink what an earlier (larger) build covered: its clips stay listed
        count = None if count is None or marker["complete"] else max(count, marker["covered"])
    split_dir = output_dir / track["split"]
    silence = 10 ** (params["silence_db"] / 20)
    known_silent = set(marker["silent"]) if marker and marker.get("params") == params else set()
    clips, silent = [], []
    with _Reader(track["path"], track["member"]) as reader:
        result["decoder"] = reader.decoder
        plan = clip_plan(track["track_id"], reader.frames, reader.samplerate, params["seed"],
                         params["min_clip_seconds"], params["max_clip_seconds"])
        wanted = plan if count is None else plan[:count]
        for index, (start, length) in enumerate(wanted):
            name = _clip_name(track, index)
            target = split_dir / name
            entry = {"file_name": name, "clip_index": index,
                     "start_seconds": round(start / reader.samplerate, 6)}
            if index in known_silent:
                silent.append(index)
                continue
            if target.exists():  # written atomically by an earlier run: complete
                entry["duration_seconds"] = round(sf.info(str(target)).frames / SAMPLING_RATE, 6)
                clips.append(entry)
                result["reused"] += 1
                continue
            y = reader.read(start, length)
            result["decoded"] = True
            if len(y) < params["min_clip_seconds"] * reader.samplerate:  # header promised more than the stream has
                break
            if float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < silence:
                silent.append(index)
                result["silent"] += 1
                continue
            y = np.clip(_resample(y, reader.samplerate), -1.0, 1.0)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            sf.write(str(tmp), y, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
            os.replace(tmp, target)
            entry["duration_seconds"] = round(len(y) / SAMPLING_RATE, 6)
            clips.append(entry)
            result["written"] += 1
        complete = len(wanted) == len(plan)
        source_seconds = reader.frames / reader.samplerate
    write_json(marker_path, {
        "version": BUILD_FORMAT_VERSION, "params": params, "split": track["split"], "track": track,
        "covered": len(wanted), "total": len(plan), "complete": complete, "source_seconds": round(source_seconds, 3),
        "clips": clips, "silent": sorted(silent),
    }, indent=1)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Planning and the build


def _round_robin(lists: Sequence[Sequence]) -> Iterable:
    for i in range(max((len(x) for x in lists), default=0)):
        for x in lists:
            if i < len(x):
                yield x[i]


def plan_build(scans: dict[str, dict], minutes: float | None, params: dict,
               sample_seconds_per_track: float = 90) -> list[tuple[Track, int | None]]:
    """[(track, clips to take or None for all)] in build order. See the module docstring for the `minutes` rule."""
    per_package = [scans[p]["tracks"] for p in scans]
    if minutes is None:
        return [(t, None) for t in _round_robin(per_package)]
    order = list(_round_robin(per_package))
    plans: dict[str, list[tuple[int, int, int]]] = {}

    def clips_of(track: Track) -> list[tuple[int, int, int]]:  # decoded lazily: only the headers are read
        if track.track_id not in plans:
            with _Reader(track.path, track.member) as reader:
                sr = reader.samplerate
                plans[track.track_id] = [(s, n, sr) for s, n in clip_plan(
                    track.track_id, reader.frames, sr, params["seed"], params["min_clip_seconds"],
                    params["max_clip_seconds"])]
        return plans[track.track_id]

    target = minutes * 60
    taken: dict[str, int] = {}
    total = 0.0
    for pass_cap in (sample_seconds_per_track, None):
        for track in order:
            if total >= target:
                break
            clips = clips_of(track)
            n = len(clips) if pass_cap is None else sum(1 for s, _, sr in clips if s < pass_cap * sr)
            before = taken.get(track.track_id, 0)
            if n > before:
                total += sum(length / sr for _, length, sr in clips[before:n])
                taken[track.track_id] = n
    return [(t, taken[t.track_id]) for t in order if taken.get(t.track_id)]


def _select_packages(packages, minutes: float | None) -> list[str]:
    if packages:
        names = [p.strip() for p in (packages.split(",") if isinstance(packages, str) else packages) if p.strip()]
        return list(dict.fromkeys(names))
    names = list(PACKAGES)
    if minutes is not None:
        names = names[: min(len(names), 1 + math.ceil(minutes / 30))]
    return names


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _worker_init():
    # workers leave Ctrl-C to the parent, and die on the SIGTERM of Pool.terminate() (not the parent's handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _BuildLock:
    """One build at a time per output_dir (an advisory flock on output_dir/.build/lock)."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / ".build" / "lock"
        self.handle = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise RuntimeError(f"another build-corpus run is writing {self.path.parent.parent}") from None
        return self

    def __exit__(self, *exc):
        self.handle.close()


def build_corpus(output_dir, minutes: float | None = None, packages=None, seed: int = 0,
                 min_clip_seconds: float = 10, max_clip_seconds: float = 35, cache_dir=None, progress: bool = True,
                 validation_every: int = 20, silence_db: float = -60.0, sample_seconds_per_track: float = 90,
                 num_workers: int | None = None, overwrite: bool = False) -> dict:
    """Build (or complete) the corpus in `output_dir`; returns the manifest (also written to manifest.json).

    minutes: None builds every track in full (about 16 h); N builds the small sampler described in the module
    docstring. packages: names or a comma-separated string (default: all of `PACKAGES`, in its order).
    cache_dir: where the .debs and their unpacked files are kept (default `default_cache_dir()`).
    validation_every: every N-th track of each package's seeded order (from the 2nd) is held out; 0: none.
    silence_db: clips with RMS below this are skipped. sample_seconds_per_track: the `minutes` sampler's cut.
    num_workers: decoding processes (default: the CPU count). overwrite: start again in a used output_dir."""
    arguments = dict(locals())
    # A build killed with SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: the workers are terminated with it and the
    # next run resumes. Only the main thread may install signal handlers.
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with _BuildLock(Path(output_dir)):
            return _build_corpus(**arguments)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _build_corpus(output_dir, minutes, packages, seed, min_clip_seconds, max_clip_seconds, cache_dir, progress,
                  validation_every, silence_db, sample_seconds_per_track, num_workers, overwrite) -> dict:
    from tqdm.auto import tqdm

    started = time.time()
    output_dir = Path(output_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not min_clip_seconds > 0 or max_clip_seconds < min_clip_seconds:
        raise ValueError("need 0 < min_clip_seconds <= max_clip_seconds")
    params = {"format": BUILD_FORMAT_VERSION, "sampling_rate": SAMPLING_RATE, "seed": int(seed),
              "min_clip_seconds": float(min_clip_seconds), "max_clip_seconds": float(max_clip_seconds),
              "validation_every": int(validation_every), "silence_db": float(silence_db)}
    params_path = output_dir / ".build" / "params.json"
    existing = _load_json(params_path)
    if existing is not None and existing != params and not overwrite:
        raise ValueError(f"{output_dir} was built with {existing}, not {params}: use another output_dir or "
                         "overwrite=True (--overwrite) to start again")
    if overwrite and output_dir.exists():
        for name in (*SPLITS, ".build/tracks", ".build/packages", ".build/params.json", "licences", "manifest.json"):
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_json(params_path, params, indent=1)

    names = _select_packages(packages, minutes)
    scans, package_info = {}, {}
    for name in tqdm(names, desc="packages", disable=not progress, unit="pkg"):
        root, version, origin = fetch_package(name, cache_dir)
        scan = scan_package(name, root, seed=seed, validation_every=validation_every)
        if not scan["tracks"]:
            raise RuntimeError(f"{name}: no music files found under {root} (patterns "
                               f"{PACKAGES[name].music if name in PACKAGES else DEFAULT_MUSIC_PATTERNS})")
        scans[name] = scan
        info = {"version": version, "origin": origin, "tracks_in_package": len(scan["tracks"]),
                "near_duplicates_skipped": scan["near_duplicates"],
                "non_music_audio_files_skipped": len(scan["other_audio"]),
                "licences": sorted({t.licence for t in scan["tracks"]})}
        package_info[name] = info
        write_json(output_dir / ".build" / "packages" / f"{name}.json", info, indent=1)
        licence_dir = output_dir / "licences"
        licence_dir.mkdir(parents=True, exist_ok=True)
        (licence_dir / f"{name}.copyright").write_text(scan["copyright"])
        for folder, text in scan["folder_licences"].items():
            (licence_dir / f"{name}.{_slugify(Path(folder).name)}.license.txt").write_text(text)

    plan = plan_build(scans, minutes, params, sample_seconds_per_track)
    jobs = [{"track": asdict(t), "count": n, "params": params, "output_dir": str(output_dir)} for t, n in plan]
    counters = {"tracks_planned": len(jobs), "tracks_decoded": 0, "clips_written": 0, "clips_reused": 0,
                "silent_clips_found": 0, "decoders": {}}
    workers = num_workers if num_workers is not None else min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), desc="tracks", disable=not progress, unit="track")

    def account(res):
        counters["tracks_decoded"] += int(res["decoded"])
        counters["clips_written"] += res["written"]
        counters["clips_reused"] += res["reused"]
        counters["silent_clips_found"] += res["silent"]
        if "decoder" in res:
            counters["decoders"][res["decoder"]] = counters["decoders"].get(res["decoder"], 0) + 1
        bar.update(1)
        bar.set_postfix(written=counters["clips_written"], reused=counters["clips_reused"])

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            account(build_track(job))
    else:
        import multiprocessing

        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        # Ctrl-C reaches the parent only; leaving the `with` (interrupt or a worker's error) terminates the workers,
        # so nothing keeps writing after the run is gone.
        with context.Pool(workers, initializer=_worker_init) as pool:
            for res in pool.imap_unordered(build_track, jobs):
                account(res)
    bar.close()

    manifest = finalize(output_dir, params)
    manifest["build"] = {
        "seconds": round(time.time() - started, 1),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "arguments": {"minutes": minutes, "packages": names, "seed": seed, "min_clip_seconds": min_clip_seconds,
                      "max_clip_seconds": max_clip_seconds, "validation_every": validation_every,
                      "silence_db": silence_db, "sample_seconds_per_track": sample_seconds_per_track,
                      "cache_dir": str(cache_dir), "num_workers": workers},
        **counters,
    }
    write_json(output_dir / "manifest.json", manifest, indent=1)
    return manifest


def finalize(output_dir, params: dict | None = None) -> dict:
    """Rewrite train/validation metadata.jsonl from the finished tracks in output_dir, delete clips no finished
    track owns (left by an interrupted run with other arguments) and return the manifest totals."""
    output_dir = Path(output_dir)
    params = params or _load_json(output_dir / ".build" / "params.json")
    rows = {split: [] for split in SPLITS}
    owned = set()
    silent = 0
    tracks_per_package: dict[str, set] = {}
    for marker_path in sorted((output_dir / ".build" / "tracks").glob("*/*.json")):
        marker = _read_marker(marker_path)
        if not marker or marker.get("params") != params:
            continue
        track, split = marker["track"], marker["split"]
        silent += len(marker["silent"])
        for clip in marker["clips"]:
            path = output_dir / split / clip["file_name"]
            if not path.exists():
                continue
            owned.add(path)
            tracks_per_package.setdefault(track["package"], set()).add(track["track_id"])
            rows[split].append({"file_name": clip["file_name"], "package": track["package"], "track": track["track"],
                                "track_id": track["track_id"], "clip_index": clip["clip_index"],
                                "start_seconds": clip["start_seconds"], "duration_seconds": clip["duration_seconds"],
                                "licence": track["licence"], "source_file": track["source_file"]})
    removed = 0
    for split in SPLITS:
        split_dir = output_dir / split
        if split_dir.exists():
            for path in list(split_dir.rglob("*")):
                if path.is_file() and path.name != "metadata.jsonl" and path not in owned:
                    path.unlink()
                    removed += 1
            for folder in sorted((p for p in split_dir.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
        if rows[split]:
            rows[split].sort(key=lambda r: (r["package"], r["track_id"], r["clip_index"]))
            split_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(split_dir / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows[split]))
        elif split_dir.exists():
            shutil.rmtree(split_dir)

    packages = {}
    for split, split_rows in rows.items():
        for r in split_rows:
            p = packages.setdefault(r["package"], {"tracks": 0, "clips": 0, "hours": 0.0,
                                                   "clips_per_split": {s: 0 for s in SPLITS}, "licences": {}})
            p["clips"] += 1
            p["hours"] += r["duration_seconds"] / 3600
            p["clips_per_split"][split] += 1
            p["licences"][r["licence"]] = round(p["licences"].get(r["licence"], 0) + r["duration_seconds"] / 60, 2)
    for name, p in packages.items():
        p["tracks"] = len(tracks_per_package.get(name, ()))
        p["minutes"] = round(p["hours"] * 60, 2)
        p["hours"] = round(p["hours"], 4)
        info = _load_json(output_dir / ".build" / "packages" / f"{name}.json") or {}
        p.update({k: info[k] for k in ("version", "near_duplicates_skipped", "non_music_audio_files_skipped")
                  if k in info})
    durations = [r["duration_seconds"] for split_rows in rows.values() for r in split_rows]
    return {
        "name": "musicoder-corpus",
        "description": "Game soundtracks from Debian packages, 44.1 kHz mono 16-bit FLAC clips of "
                       f"{params['min_clip_seconds']:g}-{params['max_clip_seconds']:g} s (audiofolder layout)",
        "sampling_rate": SAMPLING_RATE,
        "params": params,
        "clips": len(durations),
        "hours": round(sum(durations) / 3600, 4),
        "tracks": sum(len(v) for v in tracks_per_package.values()),
        "splits": {s: {"clips": len(rows[s]), "tracks": len({r["track_id"] for r in rows[s]}),
                       "hours": round(sum(r["duration_seconds"] for r in rows[s]) / 3600, 4)} for s in SPLITS},
        "clip_seconds": {"min": round(min(durations), 3) if durations else None,
                         "max": round(max(durations), 3) if durations else None,
                         "mean": round(float(np.mean(durations)), 3) if durations else None},
        "skipped_silent_clips": silent,
        "skipped_near_duplicate_files": sum(len(p.get("near_duplicates_skipped", [])) for p in packages.values()),
        "removed_orphan_files": removed,
        "packages": dict(sorted(packages.items(), key=lambda kv: list(PACKAGES).index(kv[0])
                                if kv[0] in PACKAGES else len(PACKAGES))),
    }


# ----------------------------------------------------------------------------------------------------------------
# CLI


@dataclass
class BuildCorpusArguments:
    """Options of `musicoder-data build-corpus` (the keyword arguments of `build_corpus`)."""

    output_dir: str = field(default="data/corpus", metadata={"help": "where the audiofolder dataset is written"})
    minutes: float | None = field(
        default=None,
        metadata={"help": "build a small sampler of about this many minutes (60: ~160 clips, 90: ~240 clips); "
                          "unset: the full corpus (about 16 h)"},
    )
    packages: str | None = field(
        default=None,
        metadata={"help": "comma-separated Debian packages (unset: all, in this order: " + ",".join(PACKAGES) + ")"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the track order, the splits and the clip lengths"})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "where the .debs and their unpacked files are kept (unset: $MUSICODER_CORPUS_CACHE, else "
                          "$XDG_CACHE_HOME/musicoder-hf/corpus or ~/.cache/musicoder-hf/corpus)"},
    )
    # int defaults, as before: they are recorded as given in manifest.json
    min_clip_seconds: float = field(default=10, metadata={"help": "shortest clip, in seconds"})
    max_clip_seconds: float = field(default=35, metadata={"help": "longest clip, in seconds"})
    validation_every: int = field(
        default=20, metadata={"help": "hold out every N-th track of each package (0: no validation split)"}
    )
    silence_db: float = field(default=-60.0, metadata={"help": "clips with an RMS below this dBFS are skipped"})
    sample_seconds_per_track: float = field(
        default=90, metadata={"help": "with --minutes: take the clips starting in the first S seconds of each track"}
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "decoding processes (unset: the CPU count, at most 8)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "delete what output_dir holds and start again"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bars"})
    list_packages: bool = field(default=False, metadata={"help": "print the known packages and exit"})


def main(argv=None) -> int:
    parser = command_line_parser(
        BuildCorpusArguments,
        prog="musicoder-data build-corpus",
        description="Build the unlabeled pre-training corpus (44.1 kHz mono FLAC clips of 10-35 s, audiofolder "
                    "layout) from Debian game-soundtrack packages. Default: the full corpus (about 16 h).",
    )
    args = parse_command_line(parser, argv)
    if args.list_packages:
        for spec in PACKAGES.values():
            print(f"{spec.name:24s} ~{spec.minutes:4.0f} min  {spec.note}")
        return 0
    try:
        manifest = build_corpus(
            args.output_dir, minutes=args.minutes, packages=args.packages, seed=args.seed,
            min_clip_seconds=args.min_clip_seconds, max_clip_seconds=args.max_clip_seconds, cache_dir=args.cache_dir,
            progress=not args.no_progress, validation_every=args.validation_every, silence_db=args.silence_db,
            sample_seconds_per_track=args.sample_seconds_per_track, num_workers=args.num_workers,
            overwrite=args.overwrite,
        )
    except (RuntimeError, ValueError) as err:
        print(f"build-corpus: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build-corpus: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"{manifest['clips']} clips, {manifest['hours']:.2f} h ({manifest['splits']['train']['clips']} train / "
          f"{manifest['splits']['validation']['clips']} validation) in {args.output_dir}; "
          f"{manifest['build']['seconds']:.0f} s")
    for name, p in manifest["packages"].items():
        print(f"  {name:24s} {p['tracks']:3d} tracks {p['clips']:5d} clips {p['minutes']:7.1f} min  "
              + ", ".join(p["licences"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
