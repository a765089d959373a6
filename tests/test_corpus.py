"""The pre-training corpus builder (musicoder_hf.builders.corpus) on a tiny real build and on synthetic packages.

The real build fetches one small Debian package (singularity-music, 51 MB) with `apt-get download` into the repo's
`.cache/corpus/` (gitignored, reused by later runs) and cuts about 3 minutes of clips from it.
"""

import itertools
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicoder_hf.builders import corpus
from musicoder_hf.builders.corpus import build_corpus, clip_plan, licence_for_track, licence_from_text

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "corpus"
PACKAGE = "singularity-music"
COLUMNS = {"audio", "package", "track", "track_id", "clip_index", "start_seconds", "duration_seconds", "licence",
           "source_file"}

needs_debian = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None or (shutil.which("apt-get") is None and not list(CACHE.glob("debs/*.deb"))),
    reason="needs dpkg-deb and apt-get (Debian/Ubuntu) to fetch the soundtrack package",
)


def _rows(output_dir):
    rows = {}
    for split in ("train", "validation"):
        path = Path(output_dir) / split / "metadata.jsonl"
        rows[split] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return rows


def _clip_files(output_dir):
    return sorted(p.relative_to(output_dir).as_posix() for p in Path(output_dir).glob("*/*/*.flac"))


def _build(output_dir, **kwargs):
    kwargs = {"minutes": 3, "packages": [PACKAGE], "seed": 0, "cache_dir": CACHE, "progress": False,
              "num_workers": 2, **kwargs}
    return build_corpus(output_dir, **kwargs)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    output_dir = tmp_path_factory.mktemp("corpus") / "tiny"
    manifest = _build(output_dir)
    return output_dir, manifest


def _copy(tiny, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny[0], target)  # copy2: keeps mtimes
    return target


# ---------------------------------------------------------------------------------------------------------------
# The tiny real build


@needs_debian
def test_loads_as_audiofolder_44k_mono(tiny, tmp_path):
    import datasets

    output_dir, manifest = tiny
    ds = datasets.load_dataset("audiofolder", data_dir=str(output_dir), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == {"train", "validation"}
    for split in ds:
        assert set(ds[split].column_names) == COLUMNS
        assert ds[split].num_rows == manifest["splits"][split]["clips"] > 0
    row = ds["train"][0]
    audio = row["audio"]
    samples = audio.get_all_samples()
    assert samples.sample_rate == 44100
    assert samples.data.shape[0] == 1  # mono
    assert abs(samples.data.shape[1] / 44100 - row["duration_seconds"]) < 1e-4
    assert float(samples.data.abs().max()) > 0.01  # real music, not silence
    assert row["package"] == PACKAGE and row["licence"] == "CC-BY-SA-3.0"
    assert row["source_file"].startswith("usr/share/games/singularity/music/")
    info = sf.info(str(output_dir / "train" / _rows(output_dir)["train"][0]["file_name"]))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("FLAC", "PCM_16", 1, 44100)


@needs_debian
def test_clips_are_consecutive_and_10_to_35_seconds(tiny):
    output_dir, _ = tiny
    rows = _rows(output_dir)
    by_track = {}
    for row in rows["train"] + rows["validation"]:
        assert 10.0 <= row["duration_seconds"] <= 35.0
        frames = sf.info(str(output_dir / ("train" if row in rows["train"] else "validation") / row["file_name"])).frames
        assert frames == round(row["duration_seconds"] * 44100)
        by_track.setdefault(row["track_id"], []).append(row)
    assert len(by_track) >= 2  # the small corpus spans several tracks
    for clips in by_track.values():
        clips.sort(key=lambda r: r["clip_index"])
        assert [r["clip_index"] for r in clips] == list(range(len(clips)))
        assert clips[0]["start_seconds"] == 0.0
        for a, b in itertools.pairwise(clips):
            assert abs(a["start_seconds"] + a["duration_seconds"] - b["start_seconds"]) < 1e-3
        # --minutes takes the clips that start in the first 90 s of each track
        assert all(r["start_seconds"] < 90 for r in clips)


@needs_debian
def test_splits_are_by_track(tiny):
    output_dir, _ = tiny
    rows = _rows(output_dir)
    train = {r["track_id"] for r in rows["train"]}
    validation = {r["track_id"] for r in rows["validation"]}
    assert train and validation and not train & validation
    # the rule: every 20th track of the package's seeded order, starting with the second, is held out
    root, _, _ = corpus.fetch_package(PACKAGE, CACHE)
    scan = corpus.scan_package(PACKAGE, root, seed=0, validation_every=20)
    expected = {t.track_id: t.split for t in scan["tracks"]}
    assert [t.split for t in scan["tracks"]][:3] == ["train", "validation", "train"]
    for split, split_rows in rows.items():
        assert all(expected[r["track_id"]] == split for r in split_rows)
    # files live in their split's folder only
    assert all(f.startswith(("train/", "validation/")) for f in _clip_files(output_dir))


@needs_debian
def test_manifest_matches_files(tiny):
    output_dir, manifest = tiny
    rows = _rows(output_dir)
    all_rows = rows["train"] + rows["validation"]
    files = _clip_files(output_dir)
    assert manifest == json.loads((output_dir / "manifest.json").read_text())
    assert manifest["clips"] == len(all_rows) == len(files)
    assert sorted(f"{s}/{r['file_name']}" for s in rows for r in rows[s]) == files
    assert manifest["hours"] == pytest.approx(sum(r["duration_seconds"] for r in all_rows) / 3600, abs=1e-3)
    assert manifest["hours"] * 60 >= 3  # asked for 3 minutes
    package = manifest["packages"][PACKAGE]
    assert package["clips"] == len(all_rows) and package["tracks"] == len({r["track_id"] for r in all_rows})
    assert package["version"] and package["licences"] == {"CC-BY-SA-3.0": pytest.approx(package["minutes"], abs=0.05)}
    assert manifest["build"]["clips_written"] == len(files) and manifest["build"]["tracks_decoded"] == package["tracks"]
    assert manifest["params"]["seed"] == 0 and manifest["build"]["arguments"]["packages"] == [PACKAGE]
    assert (output_dir / "licences" / f"{PACKAGE}.copyright").read_text().count("ShareAlike") > 0


@needs_debian
def test_deterministic_given_the_seed(tiny, tmp_path):
    output_dir, _ = tiny
    again = tmp_path / "again"
    _build(again, num_workers=1)
    assert _rows(again) == _rows(output_dir)
    for name in _clip_files(output_dir):
        np.testing.assert_array_equal(sf.read(str(again / name))[0], sf.read(str(output_dir / name))[0])
    # another seed cuts other clips (the boundaries come from a generator seeded by (seed, track_id))
    track_id = _rows(output_dir)["train"][0]["track_id"]
    assert clip_plan(track_id, 48000 * 300, 48000, seed=0) == clip_plan(track_id, 48000 * 300, 48000, seed=0)
    assert clip_plan(track_id, 48000 * 300, 48000, seed=0) != clip_plan(track_id, 48000 * 300, 48000, seed=1)


@needs_debian
def test_rerun_reuses_everything(tiny, tmp_path):
    output_dir = _copy(tiny, tmp_path)
    mtimes = {f: os.stat(output_dir / f).st_mtime_ns for f in _clip_files(output_dir)}
    manifest = _build(output_dir)
    assert manifest["build"]["tracks_decoded"] == 0 and manifest["build"]["clips_written"] == 0
    assert manifest["build"]["clips_reused"] == len(mtimes)
    assert {f: os.stat(output_dir / f).st_mtime_ns for f in _clip_files(output_dir)} == mtimes
    assert _rows(output_dir) == _rows(tiny[0])


@needs_debian
def test_interrupted_run_resumes_to_the_same_corpus(tiny, tmp_path):
    output_dir = _copy(tiny, tmp_path)
    rows = _rows(output_dir)
    first, second = rows["train"][0]["track_id"], rows["validation"][0]["track_id"]
    # track 1 lost a clip; track 2 was interrupted after its clips but before its done marker; a temporary file and
    # a clip of a track that never finished are lying around
    lost = next(r for r in rows["train"] if r["track_id"] == first and r["clip_index"] == 1)
    lost_path = output_dir / "train" / lost["file_name"]
    lost_audio = sf.read(str(lost_path))[0]
    lost_path.unlink()
    (output_dir / ".build" / "tracks" / second).with_suffix(".json").unlink()
    (output_dir / "train" / PACKAGE / ".half-written_000.flac.tmp").write_bytes(b"partial")
    shutil.copy(output_dir / "train" / rows["train"][0]["file_name"], output_dir / "train" / PACKAGE / "stray_000.flac")
    kept = {f: os.stat(output_dir / f).st_mtime_ns for f in _clip_files(output_dir) if "stray" not in f}

    manifest = _build(output_dir)
    assert manifest["build"]["tracks_decoded"] == 1  # only the track that lost a clip is decoded again
    assert manifest["build"]["clips_written"] == 1
    assert manifest["removed_orphan_files"] == 2
    assert _rows(output_dir) == rows
    np.testing.assert_array_equal(sf.read(str(lost_path))[0], lost_audio)
    assert all(os.stat(output_dir / f).st_mtime_ns == t for f, t in kept.items())
    assert _clip_files(output_dir) == _clip_files(tiny[0])
    assert not list(output_dir.rglob("*.tmp"))
    assert manifest["clips"] == tiny[1]["clips"]


@needs_debian
def test_killed_build_stops_its_workers_and_resumes(tiny, tmp_path):
    import signal
    import sys
    import time

    reference = tmp_path / "reference"
    _build(reference, minutes=6)
    output_dir = tmp_path / "killed"
    args = ["--output_dir", str(output_dir), "--minutes", "6", "--packages", PACKAGE, "--cache_dir", str(CACHE),
            "--num_workers", "2", "--no_progress"]
    code = "import sys; from musicoder_hf.builders.corpus import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not list(output_dir.glob("*/*/*.flac")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # what a CI timeout or `kill` sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not (output_dir / "manifest.json").exists()  # it stopped before the end
    files = _clip_files(output_dir)
    time.sleep(1.0)
    assert _clip_files(output_dir) == files  # no orphaned worker keeps writing
    assert 0 < len(files) < len(_clip_files(reference))
    manifest = _build(output_dir, minutes=6)
    assert _rows(output_dir) == _rows(reference)
    assert manifest["build"]["clips_reused"] >= len(files) - 1  # a clip being renamed at the kill may be redone
    for name in _clip_files(reference):
        np.testing.assert_array_equal(sf.read(str(output_dir / name))[0], sf.read(str(reference / name))[0])


@needs_debian
def test_one_build_at_a_time(tiny, tmp_path):
    output_dir = _copy(tiny, tmp_path)
    with corpus._BuildLock(output_dir), pytest.raises(RuntimeError, match="another build-corpus run"):
        _build(output_dir)
    assert _build(output_dir)["clips"] == tiny[1]["clips"]


@needs_debian
def test_growing_minutes_reuses_the_small_build(tiny, tmp_path):
    output_dir = _copy(tiny, tmp_path)
    before = _rows(output_dir)
    mtimes = {f: os.stat(output_dir / f).st_mtime_ns for f in _clip_files(output_dir)}
    manifest = _build(output_dir, minutes=6)
    after = _rows(output_dir)
    assert manifest["hours"] * 60 >= 6 > tiny[1]["hours"] * 60
    assert manifest["build"]["clips_reused"] == len(mtimes)
    assert manifest["build"]["tracks_decoded"] == manifest["tracks"] - tiny[1]["tracks"] > 0
    for split in before:
        assert all(r in after[split] for r in before[split])
    assert all(os.stat(output_dir / f).st_mtime_ns == t for f, t in mtimes.items())
    # a build that took more of each track, then a smaller one: what exists is kept, and a lost clip is repaired
    # without dropping the clips the smaller build would not have taken
    bigger = _build(output_dir, minutes=3, sample_seconds_per_track=150)
    assert bigger["clips"] > manifest["clips"]
    assert bigger["build"]["clips_written"] == bigger["clips"] - manifest["clips"]
    after = _rows(output_dir)
    late = max(after["train"], key=lambda r: r["clip_index"])
    assert late["start_seconds"] >= 90
    (output_dir / "train" / late["file_name"]).unlink()
    smaller = _build(output_dir, minutes=3)
    assert smaller["build"]["clips_written"] == 1 and smaller["removed_orphan_files"] == 0
    assert _rows(output_dir) == after


@needs_debian
def test_cli_and_param_guard(tiny, tmp_path, capsys):
    from musicoder_hf.builders.cli import main as cli_main

    output_dir = _copy(tiny, tmp_path)
    args = ["build-corpus", "--output_dir", str(output_dir), "--minutes", "3", "--packages", PACKAGE,
            "--cache_dir", str(CACHE), "--no_progress"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert f"{tiny[1]['clips']} clips" in out and "CC-BY-SA-3.0" in out
    assert json.loads((output_dir / "manifest.json").read_text())["build"]["tracks_decoded"] == 0
    # an output folder is bound to its seed and clip lengths: mixing would corrupt the corpus
    assert cli_main(args + ["--seed", "1"]) == 1
    assert "was built with" in capsys.readouterr().err
    assert _rows(output_dir) == _rows(tiny[0])
    assert cli_main(["build-corpus", "--list_packages"]) == 0
    assert "colobot-common-sounds" in capsys.readouterr().out


@needs_debian
def test_seek_is_sample_exact_on_real_vorbis(tiny):
    root, _, _ = corpus.fetch_package(PACKAGE, CACHE)
    path = next((root / "usr/share/games/singularity/music").glob("*.ogg"))
    with sf.SoundFile(str(path)) as f:
        head = f.read(48000 * 8, dtype="float32", always_2d=True)
    with corpus._Reader(str(path)) as reader:
        assert reader.samplerate == 48000
        np.testing.assert_array_equal(reader.read(123457, 48000), head[123457:171457].mean(axis=1))


# ---------------------------------------------------------------------------------------------------------------
# Synthetic packages: music filtering, near-duplicates, archives, silence, resampling, licences


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Test

Files: *
Copyright: 2020, Somebody
License: GPL-3+

Files: debian/*
Copyright: 2020, Packager
License: GPL-2+

Files:
 base/music/b.ogg
 base/sound/x.ogg
Copyright: 2020, Composer
License: CC-BY-3.0

License: CC-BY-3.0
 text
"""


def _tone(seconds, sr, freq=440.0, channels=2, silent_after=None):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t)
    if silent_after is not None:
        y[int(silent_after * sr):] = 0.0
    return np.repeat(y[:, None], channels, axis=1).astype(np.float32)


def _write_ogg(path, y, sr):
    # block-wise: libsndfile 1.2 crashes writing long Ogg Vorbis files in one call
    with sf.SoundFile(str(path), "w", sr, y.shape[1], format="OGG", subtype="VORBIS") as f:
        for start in range(0, len(y), sr):
            f.write(y[start : start + sr])


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """colobot-like layout: music/*.ogg plus sounds/*.wav effects, an _enhanced duplicate, and a .pk3 archive."""
    name = "colobot-common-sounds"
    root = tmp_path / "root"
    music = root / "usr/share/games/colobot/music"
    sounds = root / "usr/share/games/colobot/sounds"
    doc = root / "usr/share/doc" / name
    for folder in (music, sounds, doc):
        folder.mkdir(parents=True)
    (doc / "copyright").write_text(DEP5)
    _write_ogg(music / "Song One.ogg", _tone(50, 48000), 48000)
    _write_ogg(music / "quiet.ogg", _tone(130, 44100, silent_after=12), 44100)
    _write_ogg(music / "song_enhanced.ogg", _tone(40, 44100), 44100)
    _write_ogg(music / "jingle.ogg", _tone(5, 44100), 44100)
    sf.write(str(sounds / "sound001.wav"), _tone(30, 22050), 22050)
    monkeypatch.setattr(corpus, "fetch_package", lambda package, cache_dir: (root, "1.0-test", "test"))
    return name, root


def test_music_filter_near_duplicates_silence_and_resampling(fake_package, tmp_path):
    name, root = fake_package
    scan = corpus.scan_package(name, root)
    assert sorted(t.track for t in scan["tracks"]) == ["Song One", "jingle", "quiet"]
    assert scan["near_duplicates"] == ["usr/share/games/colobot/music/song_enhanced.ogg"]
    assert scan["other_audio"] == ["usr/share/games/colobot/sounds/sound001.wav"]
    assert {t.slug for t in scan["tracks"]} == {"song-one", "jingle", "quiet"}

    output_dir = tmp_path / "out"
    manifest = build_corpus(output_dir, packages=name, cache_dir=tmp_path / "cache", progress=False, num_workers=1)
    rows = _rows(output_dir)["train"] + _rows(output_dir)["validation"]
    quiet = [r for r in rows if r["track"] == "quiet"]
    plan = clip_plan(f"{name}/quiet", 130 * 44100, 44100)
    silent_expected = sum(1 for start, _ in plan if start >= 12 * 44100)
    assert silent_expected >= 2
    assert manifest["skipped_silent_clips"] == silent_expected
    assert [r["clip_index"] for r in quiet] == [i for i, (s, _) in enumerate(plan) if s < 12 * 44100]
    assert not [r for r in rows if r["track"] == "jingle"]  # shorter than one 10 s clip
    song = sorted((r for r in rows if r["track"] == "Song One"), key=lambda r: r["clip_index"])
    song_plan = clip_plan(f"{name}/song-one", 50 * 48000, 48000)
    assert len(song) == len(song_plan)  # a full build takes every clip, remainder < 10 s dropped
    assert sum(n for _, n in song_plan) / 48000 > 50 - 10
    # 48 kHz -> 44.1 kHz: duration and pitch survive
    split = "train" if song[0] in _rows(output_dir)["train"] else "validation"
    y, sr = sf.read(str(output_dir / split / song[0]["file_name"]))
    assert sr == 44100 and y.ndim == 1
    assert len(y) == pytest.approx(song_plan[0][1] / 48000 * 44100, abs=1)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(len(y), 1 / 44100)[spectrum.argmax()] == pytest.approx(440, abs=1)
    assert manifest["packages"][name]["near_duplicates_skipped"] == scan["near_duplicates"]
    assert manifest["packages"][name]["non_music_audio_files_skipped"] == 1
    assert manifest["skipped_near_duplicate_files"] == 1
    assert {r["licence"] for r in rows} == {"GPL-3+"}


def test_tracks_inside_pk3_archives(tmp_path, monkeypatch):
    name = "ufoai-music"
    root = tmp_path / "root"
    base = root / "usr/share/games/ufoai/base"
    doc = root / "usr/share/doc" / name
    base.mkdir(parents=True)
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(DEP5)
    with zipfile.ZipFile(base / "0music.pk3", "w") as archive:
        for track in ("a", "b"):
            path = tmp_path / f"{track}.ogg"
            _write_ogg(path, _tone(25, 44100, freq=330), 44100)
            archive.write(path, f"music/{track}.ogg")
        archive.writestr("maps/readme.txt", "not music")
    scan = corpus.scan_package(name, root, validation_every=2)
    by_track = {t.track: t for t in scan["tracks"]}
    assert set(by_track) == {"a", "b"} and by_track["a"].member == "music/a.ogg"
    # DEP-5: the last matching stanza wins; archive members count as files of the archive's folder
    assert by_track["b"].licence == "CC-BY-3.0" and by_track["a"].licence == "GPL-3+"
    assert sorted(t.split for t in scan["tracks"]) == ["train", "validation"]
    monkeypatch.setattr(corpus, "fetch_package", lambda package, cache_dir: (root, "2.5-test", "test"))
    manifest = build_corpus(tmp_path / "out", packages=[name], cache_dir=tmp_path / "cache", progress=False,
                            validation_every=2, num_workers=1)
    assert manifest["splits"]["train"]["tracks"] == manifest["splits"]["validation"]["tracks"] == 1
    assert manifest["packages"][name]["licences"].keys() == {"CC-BY-3.0", "GPL-3+"}


def test_ffmpeg_fallback_decodes_what_soundfile_cannot(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg program")
    path = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3",
                    "-c:a", "aac", str(path)], check=True)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))
    with corpus._Reader(str(path)) as reader:
        assert reader.decoder == "ffmpeg" and reader.samplerate == 44100
        assert reader.frames == pytest.approx(3 * 44100, abs=2048)
        assert np.abs(reader.read(44100, 4410)).max() > 0.05


def test_licence_parsing():
    # Warzone 2100 album license.txt: dual licence, "any later version" of CC-BY-SA
    album = ("'Warzone 2100 - Legacy Soundtrack' is licensed and available under: \nCC-BY-SA-3.0 (or, at your "
             "discretion, any later version)\n\nAlternatively, 'Warzone 2100 - Legacy Soundtrack' may be used & "
             "distributed under the terms of \nthe GNU General Public License Version 2 or later (the \"GPL\").")
    assert licence_from_text(album) == "CC-BY-SA-3.0+ OR GPL-2+"
    # nexuiz-music / wesnoth-1.16-music: free-form copyright files
    nexuiz = ("This program is free software; you can redistribute it and/or\nmodify it under the terms of the GNU "
              "General Public License\nas published by the Free Software Foundation; either version 2\nof the "
              "License, or (at your option) any later version.")
    wesnoth = ("it under the terms of the GNU General Public License version 2\n        or at your option any later "
               "version.\n ... GNU Library General Public License as published by the Free Software Foundation; "
               "either version 2 of the License")
    assert licence_from_text(nexuiz) == licence_from_text(wesnoth) == "GPL-2+"
    assert licence_from_text("Creative Commons ... (e.g., Attribution-ShareAlike 3.0 US)") == "CC-BY-SA-3.0"
    assert licence_from_text("all rights reserved") is None
    # DEP-5: installed paths carry a prefix; the last matching stanza wins; debian/* does not match
    assert licence_for_track("usr/share/games/ufoai/base/music/b.ogg", DEP5) == "CC-BY-3.0"
    assert licence_for_track("usr/share/games/ufoai/base/music/c.ogg", DEP5) == "GPL-3+"
    assert licence_for_track("usr/share/games/x/music/c.ogg", DEP5, folder_licence_text=album) == \
        "CC-BY-SA-3.0+ OR GPL-2+"


@pytest.mark.parametrize("seconds", [9.99, 10, 34, 47.5, 300, 1754.9])
@pytest.mark.parametrize("samplerate", [44100, 48000])
def test_clip_plan_rule(seconds, samplerate):
    frames = int(seconds * samplerate)
    plan = clip_plan("pkg/track", frames, samplerate, seed=3)
    assert plan == clip_plan("pkg/track", frames, samplerate, seed=3)
    if seconds < 10:
        assert plan == []
        return
    assert plan[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(plan))  # consecutive
    assert all(10 * samplerate <= n <= 35 * samplerate for _, n in plan)
    assert 0 <= frames - (plan[-1][0] + plan[-1][1]) < 10 * samplerate  # only a remainder < 10 s is dropped
    # a longer track starts with the same clips (boundaries depend on the seed and the track only)
    longer = clip_plan("pkg/track", frames * 2, samplerate, seed=3)
    assert longer[: len(plan) - 1] == plan[:-1]
    lengths = [n / samplerate for _, n in clip_plan("pkg/track", 3600 * samplerate, samplerate, seed=3)]
    assert 20 < np.mean(lengths) < 25 and min(lengths) < 12 and max(lengths) > 33  # uniform in [10, 35]


def test_minutes_sampler_spreads_over_packages_and_tracks():
    assert corpus._select_packages(None, 3) == list(corpus.PACKAGES)[:2]
    assert corpus._select_packages(None, 60) == list(corpus.PACKAGES)[:3]
    assert corpus._select_packages(None, None) == list(corpus.PACKAGES)
    assert corpus._select_packages("b,a,b", 60) == ["b", "a"]
    # the first packages are the small downloads
    assert next(iter(corpus.PACKAGES)) == "singularity-music"
    assert list(corpus._round_robin([[1, 2, 3], ["a"], ["x", "y"]])) == [1, "a", "x", 2, "y", 3]


def test_clip_boundaries_and_track_order_are_those_of_earlier_builds():
    # Pinned values: a corpus built before stays valid (resume reuses its clips) only while these do not change.
    assert clip_plan("singularity-music/track", 120 * 44100, 44100, seed=0) == [
        (0, 961478), (961478, 820664), (1782142, 760781), (2542923, 1270075), (3812998, 652452), (4465450, 826550),
    ]
    assert corpus.derive_seed("singularity-music", bits=64) == 382457017726540583


def test_build_corpus_command_line(capsys):
    assert corpus.main(["--list_packages"]) == 0
    assert "singularity-music" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        corpus.main(["--minutes", "many"])
    assert stop.value.code == 2
    assert "invalid float value: 'many'" in capsys.readouterr().err
