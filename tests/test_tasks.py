"""Labeled tasks (`musicoder-data build-tasks`) and the labeled-folder loader, on tiny builds.

Needs music21 and Debian's fluidsynth + fluid-soundfont-gm; skipped (with the reason) without them.
"""

import collections
import csv
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio

from musicoder_hf.builders import tasks
from musicoder_hf.data import labeled
from musicoder_hf.data.labeled import label_info, load_labeled_dataset, to_multi_hot

pytest.importorskip("music21")

try:
    tasks.check_renderer()
    HAVE_RENDERER = True
except RuntimeError as err:  # pragma: no cover - depends on the machine
    HAVE_RENDERER, RENDERER_ERROR = False, str(err)
needs_renderer = pytest.mark.skipif(not HAVE_RENDERER, reason="fluidsynth/fluid-soundfont-gm not installed")

FOLK_LIMIT = 3  # tunes per class: one per split
INSTRUMENTS_LIMIT = 12
BUILD_KW = dict(limit=FOLK_LIMIT, instruments_limit=INSTRUMENTS_LIMIT, seed=0, num_workers=2, progress=False)


def _rows(task_dir):
    rows = {}
    for split in tasks.SPLITS:
        meta = Path(task_dir) / split / "metadata.jsonl"
        rows[split] = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    return rows


def _audio_digests(task_dir):
    return {
        p.relative_to(task_dir).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(Path(task_dir).glob("*/*.flac"))
    }


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    if not HAVE_RENDERER:
        pytest.skip(RENDERER_ERROR)
    out = tmp_path_factory.mktemp("tasks")
    summary = tasks.build_tasks(out, **BUILD_KW)
    return out, summary


@pytest.fixture(scope="session")
def built_twice(built, tmp_path_factory):
    """A second build from scratch with the same arguments, elsewhere."""
    out = tmp_path_factory.mktemp("tasks_again")
    tasks.build_tasks(out, **BUILD_KW)
    return out


# ---------------------------------------------------------------------------------------------
# the builders
# ---------------------------------------------------------------------------------------------


@needs_renderer
def test_folk_schema_and_audio(built):
    out, _ = built
    ds = load_labeled_dataset(out / "folk")
    assert list(ds) == ["train", "validation", "test"]
    info = label_info(ds)
    assert info.problem_type == "single_label_classification" and info.label_column == "label"
    assert info.names == tasks.FOLK_LABELS == ["german", "chinese", "irish", "scottish", "american"]
    feats = ds["train"].features
    assert type(feats["label"]).__name__ == "ClassLabel" and feats["audio"].sampling_rate == 44100
    example = ds["test"][0]
    audio = example["audio"]
    assert audio["sampling_rate"] == 44100 and audio["array"].ndim == 1
    assert len(audio["array"]) == 30 * 44100  # every folk clip is exactly 30 s
    assert 0.05 < float(np.sqrt(np.mean(np.asarray(audio["array"]) ** 2))) < 0.15  # normalised to -20 dBFS RMS
    labels_json = json.loads((out / "folk" / "labels.json").read_text())
    assert labels_json == {"problem_type": "single_label_classification", "names": tasks.FOLK_LABELS}
    for rows in _rows(out / "folk").values():
        for r in rows:
            assert {
                "file_name",
                "label",
                "piece_id",
                "source",
                "title",
                "duration_seconds",
                "programs",
                "fold",
            } <= set(r)
            assert r["duration_seconds"] == 30.0 and r["label"] in tasks.FOLK_LABELS
            assert r["piece_id"].startswith(r["label"] + "-") and "#X:" in r["source"]


@needs_renderer
def test_instruments_schema_and_labels(built):
    out, _ = built
    ds = load_labeled_dataset(out / "instruments")
    info = label_info(ds)
    assert info.problem_type == "multi_label_classification" and info.label_column == "labels"
    assert info.names == tasks.INSTRUMENT_LABELS and len(info.names) == 8
    feat = ds["train"].features["labels"]
    assert type(feat.feature).__name__ == "ClassLabel" and feat.feature.names == info.names
    assert ds["train"].features["audio"].sampling_rate == 44100
    family_of = {p[0]: fam for fam, progs in tasks.INSTRUMENT_FAMILIES.items() for p in progs}
    rows = [r for split_rows in _rows(out / "instruments").values() for r in split_rows]
    assert len(rows) == INSTRUMENTS_LIMIT
    for r in rows:
        assert 2 <= len(r["programs"]) <= 4 and len(r["part_families"]) == len(r["programs"])
        assert [family_of[p] for p in r["programs"]] == r["part_families"]  # each program is in its family
        assert r["labels"] == [f for f in tasks.INSTRUMENT_LABELS if f in r["part_families"]]  # labels = set present
        assert 5.0 <= r["duration_seconds"] <= 30.0
    # the loaded ids decode to the same names; multi-hot targets for the classifier
    first = ds["train"][0]
    names = [info.names[i] for i in first["labels"]]
    by_piece = {r["piece_id"]: r for r in rows}
    assert names == by_piece[first["piece_id"]]["labels"]
    hot = to_multi_hot(first["labels"], info.num_labels)
    assert len(hot) == 8 and sum(hot) == len(names) and all(v in (0.0, 1.0) for v in hot)


@needs_renderer
def test_every_class_present_and_manifest_counts(built):
    out, summary = built
    folk_rows = _rows(out / "folk")
    for split, rows in folk_rows.items():
        assert collections.Counter(r["label"] for r in rows) == {c: 1 for c in tasks.FOLK_LABELS}, split
    inst_rows = _rows(out / "instruments")
    seen = {f for rows in inst_rows.values() for r in rows for f in r["labels"]}
    assert seen == set(tasks.INSTRUMENT_LABELS)
    assert all(inst_rows[s] for s in tasks.SPLITS)
    for task, rows_by_split in (("folk", folk_rows), ("instruments", inst_rows)):
        manifest = json.loads((out / task / "manifest.json").read_text())
        assert manifest == summary[task]
        assert manifest["num_examples"] == {s: len(rows_by_split[s]) for s in tasks.SPLITS}
        for name, row in manifest["examples_per_class"].items():
            for split in tasks.SPLITS:
                n = sum(name in ([r["label"]] if task == "folk" else r["labels"]) for r in rows_by_split[split])
                assert row[split] == n
        assert manifest["seed"] == 0 and manifest["build_cpu_seconds"] > 0 and "failures" in manifest
    assert summary["folk"]["per_class_tunes"] == FOLK_LIMIT


@needs_renderer
def test_no_split_leakage(built):
    out, _ = built
    for task in tasks.TASKS:
        rows = _rows(out / task)
        ids = {split: {r["piece_id"] for r in rs} for split, rs in rows.items()}
        assert sum(len(v) for v in ids.values()) == sum(len(rs) for rs in rows.values())  # one clip per piece
        assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
        assert not ids["validation"] & ids["test"]
        splits_json = json.loads((out / task / "splits.json").read_text())
        assert splits_json == {pid: split for split, v in ids.items() for pid in v}
        for split in tasks.SPLITS:  # the audio lives in the folder of its split
            assert {p.name for p in (out / task / split).glob("*.flac")} == {r["file_name"] for r in rows[split]}
    folds = json.loads((out / "folk" / "folds.json").read_text())
    assert set(folds) == set(json.loads((out / "folk" / "splits.json").read_text()))


def test_folk_candidates_are_deduplicated():
    cands = tasks.folk_candidates()
    assert set(cands) == set(tasks.FOLK_LABELS)
    all_ids = [c["piece_id"] for v in cands.values() for c in v]
    assert len(all_ids) == len(set(all_ids))
    bodies = [c["body_hash"] for v in cands.values() for c in v]
    assert len(bodies) == len(set(bodies))  # no tune body twice, within or across classes
    irish_numbers = [c["source"].split("#X:")[1].split()[0] for c in cands["irish"]]
    assert len(irish_numbers) == len(set(irish_numbers))  # O'Neill's duplicate transcriptions dropped
    assert len(cands["irish"]) <= 1850 and min(len(v) for v in cands.values()) > 1000


@needs_renderer
def test_deterministic_given_seed(built, built_twice):
    out, _ = built
    for task in tasks.TASKS:
        assert _rows(out / task) == _rows(built_twice / task)
        assert _audio_digests(out / task) == _audio_digests(built_twice / task)
        assert (out / task / "splits.json").read_text() == (built_twice / task / "splits.json").read_text()
    # another seed draws other tunes (selection is seeded)
    order0, order0_again, order1 = (tasks.candidate_order("folk", seed=s) for s in (0, 0, 1))
    assert [c["piece_id"] for c in order0["irish"]] == [c["piece_id"] for c in order0_again["irish"]]
    assert [c["piece_id"] for c in order0["irish"][:20]] != [c["piece_id"] for c in order1["irish"][:20]]
    assert {c["piece_id"] for c in order0["irish"]} == {c["piece_id"] for c in order1["irish"]}


@needs_renderer
def test_timbre_tempo_and_loudness_do_not_give_the_folk_label_away(built):
    out, _ = built
    rows = _rows(out / "folk")
    for split, rs in rows.items():
        per_class = collections.defaultdict(list)
        tempo = collections.defaultdict(list)
        for r in rs:
            per_class[r["label"]].append(tuple(r["programs"]))
            tempo[r["label"]].append(r["median_note_seconds"])
        programs = {label: sorted(v) for label, v in per_class.items()}
        assert len({tuple(v) for v in programs.values()}) == 1, (split, programs)  # same programs in every class
        assert len({tuple(sorted(v)) for v in tempo.values()}) == 1  # same tempo draws in every class
        assert all(p[0] in tasks.DEFAULT_FOLK_PROGRAMS for v in per_class.values() for p in v)
    rms = collections.defaultdict(list)
    for split in tasks.SPLITS:
        for r in rows[split]:
            y, sr = sf.read(out / "folk" / split / r["file_name"])
            assert sr == 44100 and y.ndim == 1 and len(y) == 30 * sr
            rms[r["label"]].append(float(np.sqrt(np.mean(y**2))))
    for label, values in rms.items():
        assert all(0.07 < v < 0.11 for v in values), (label, values)


@needs_renderer
def test_rerun_reuses_everything_and_redoes_a_deleted_file(built, tmp_path, monkeypatch):
    out, _ = built
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    before = _audio_digests(work / "folk")
    victim = sorted((work / "folk" / "validation").glob("*.flac"))[0]
    victim.unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in (work / "folk").glob("*/*.flac")}
    calls = {"render": 0, "parse": 0}
    real_render, real_parse = tasks._render_job, tasks._parse_job

    def counting_render(job):
        calls["render"] += 1
        return real_render(job)

    def counting_parse(job):
        calls["parse"] += 1
        return real_parse(job)

    monkeypatch.setattr(tasks, "_render_job", counting_render)
    monkeypatch.setattr(tasks, "_parse_job", counting_parse)
    tasks.build_tasks(work, **dict(BUILD_KW, num_workers=1))
    assert calls == {"render": 1, "parse": 0}  # only the deleted clip; the parse cache is reused
    assert _audio_digests(work / "folk") == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished renders untouched
    assert _rows(work / "folk") == _rows(out / "folk")
    assert _rows(work / "instruments") == _rows(out / "instruments")


@needs_renderer
def test_interrupted_run_resumes(built, tmp_path, monkeypatch):
    out, _ = built
    work = tmp_path / "interrupted"
    shutil.copytree(out, work)
    shutil.rmtree(work / "folk")  # keep nothing of folk: it is rebuilt from scratch, then interrupted
    real_render = tasks._render_job
    done = []

    def interrupted_render(job):
        if len(done) == 4:
            Path(job["dest"]).parent.mkdir(parents=True, exist_ok=True)
            Path(job["dest"]).with_name("." + Path(job["dest"]).name + ".tmp").write_bytes(b"torn write")
            raise KeyboardInterrupt
        done.append(job["dest"])
        return real_render(job)

    monkeypatch.setattr(tasks, "_render_job", interrupted_render)
    with pytest.raises(KeyboardInterrupt):
        tasks.build_tasks(work, **dict(BUILD_KW, tasks="folk", num_workers=1))
    assert not (work / "folk" / "manifest.json").exists()  # an unfinished build has no manifest
    finished = {Path(d).name: Path(d).stat().st_mtime_ns for d in done}
    assert len(finished) == 4 and list((work / "folk").glob("*/.*.tmp"))

    resumed = []
    monkeypatch.setattr(tasks, "_render_job", lambda job: resumed.append(job["dest"]) or real_render(job))
    tasks.build_tasks(work, **dict(BUILD_KW, tasks="folk", num_workers=1))
    assert len(resumed) == 5 * FOLK_LIMIT - 4 and not {Path(d).name for d in resumed} & set(finished)
    assert {Path(d).name: Path(d).stat().st_mtime_ns for d in done} == finished
    assert not list((work / "folk").glob("*/.*.tmp"))
    assert _rows(work / "folk") == _rows(out / "folk")
    assert _audio_digests(work / "folk") == _audio_digests(out / "folk")


@needs_renderer
def test_cli_rebuild_is_a_no_op_and_prints_counts(built, tmp_path, capsys, monkeypatch):
    out, _ = built
    work = tmp_path / "cli"
    shutil.copytree(out, work)
    monkeypatch.setattr(tasks, "_render_job", lambda job: pytest.fail("nothing should be rendered"))
    rc = tasks.main(
        [
            "--output_dir",
            str(work),
            "--limit",
            str(FOLK_LIMIT),
            "--instruments_limit",
            str(INSTRUMENTS_LIMIT),
            "--num_workers",
            "1",
            "--no_progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "folk: 15 clips" in printed and "instruments: 12 clips" in printed and "german" in printed


def test_build_argument_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown task"):
        tasks.build_tasks(tmp_path, tasks="folk,jazz")
    with pytest.raises(ValueError, match=">= 3"):
        tasks.build_tasks(tmp_path, limit=2)
    with pytest.raises(ValueError, match="General MIDI"):
        tasks.build_tasks(tmp_path, folk_programs=[200])
    # on the command line, a bad value is bad usage (exit status 2), a failed build exit status 1
    for bad in (["--tasks", "nope"], ["--limit", "2"], ["--folk_programs", "0,piano"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as stop:
            tasks.main(["--output_dir", str(tmp_path), *bad])
        assert stop.value.code == 2, bad
    assert "unknown task" in capsys.readouterr().err
    assert tasks.main(["--output_dir", str(tmp_path), "--soundfont", str(tmp_path / "missing.sf2")]) == 1
    assert "build-tasks: error:" in capsys.readouterr().err


def test_write_midi_programs_channels_and_tempo(tmp_path):
    from music21 import converter

    parts = [
        {"program": 40, "events": [[0, 1, 60], [1, 0.5, 62], [1.5, 1 / 3, 64]]},
        {"program": 73, "events": [[0, 2, 72]]},
    ]
    end = tasks.write_midi(tmp_path / "x.mid", parts, bpm=97.5, velocity=80, horizon_ql=100)
    assert end == 2.0
    score = converter.parse(tmp_path / "x.mid")
    got = [
        ([i.midiProgram for i in p.getInstruments()], [(float(n.offset), n.pitch.midi) for n in p.flatten().notes])
        for p in score.parts
    ]
    assert got == [([40], [(0.0, 60), (1.0, 62), (1.5, 64)]), ([73], [(0.0, 72)])]
    assert score.metronomeMarkBoundaries()[0][2].number == 97.5
    # looping repeats the events every loop_ql until the horizon
    end = tasks.write_midi(tmp_path / "y.mid", [parts[1]], bpm=120, velocity=80, horizon_ql=7, loop_ql=3)
    assert end == 8.0


# ---------------------------------------------------------------------------------------------
# user folders
# ---------------------------------------------------------------------------------------------


def _write_wav(path, seconds=0.5, sr=22050, channels=2, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype("float32"), sr)


def test_user_folder_labels_as_subfolders(tmp_path, caplog):
    for label in ("Jazz", "rock", "blues"):
        for i in range(5):
            _write_wav(tmp_path / label / f"{label}{i}.wav", seed=i)
    with caplog.at_level(logging.WARNING, logger=labeled.__name__):
        ds = load_labeled_dataset(tmp_path)
    assert "no validation/test split" in caplog.text and "by file" in caplog.text
    info = label_info(ds)
    assert info.names == ["Jazz", "blues", "rock"] and info.problem_type == "single_label_classification"
    assert list(ds) == ["train", "validation", "test"]
    assert sum(len(d) for d in ds.values()) == 15
    for split in ("validation", "test"):  # stratified: every class in every split
        assert sorted(set(ds[split]["label"])) == [0, 1, 2]
    example = ds["train"][0]["audio"]
    assert example["sampling_rate"] == 44100 and example["array"].ndim == 1  # resampled, mono
    assert abs(len(example["array"]) - 0.5 * 44100) < 50

    # the same seed gives the same split, another seed another one
    def test_files(d):
        return [a["path"] for a in d["test"].cast_column("audio", Audio(decode=False))["audio"]]

    assert test_files(load_labeled_dataset(tmp_path)) == test_files(ds)
    assert test_files(load_labeled_dataset(tmp_path, seed=1)) != test_files(ds)


def test_user_folder_with_split_subfolders(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            for i in range(n):
                _write_wav(tmp_path / split / label / f"{split}{label}{i}.wav", sr=16000, channels=1, seed=i)
    ds = load_labeled_dataset(tmp_path)
    assert list(ds) == ["train", "validation", "test"]
    assert len(ds["test"]) == 4  # the user's test split is kept as is
    assert len(ds["train"]) + len(ds["validation"]) == 12 and len(ds["validation"]) >= 2
    assert label_info(ds).names == ["a", "b"]


def test_user_csv_single_label_grouped_by_artist(tmp_path):
    rows = []
    for i in range(24):
        _write_wav(tmp_path / "clips" / f"{i}.wav", seconds=0.3, seed=i)
        rows.append({"file_name": f"clips/{i}.wav", "label": ["folk", "pop"][i % 2], "artist": f"artist{i // 4}"})
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file_name", "label", "artist"])
        writer.writeheader()
        writer.writerows(rows)
    ds = load_labeled_dataset(tmp_path)
    assert label_info(ds).names == ["folk", "pop"]
    artists = {split: set(d["artist"]) for split, d in ds.items()}
    assert not artists["train"] & artists["validation"] and not artists["train"] & artists["test"]
    assert not artists["validation"] & artists["test"]
    assert all(len(d) for d in ds.values())


def test_user_csv_multi_label(tmp_path):
    tags = ["rock;pop", "jazz", "pop; jazz", "rock"]
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "labels", "track_id"])
        for i in range(16):
            _write_wav(tmp_path / f"t{i}.wav", seconds=0.3, seed=i)
            writer.writerow([f"t{i}.wav", tags[i % 4], f"track{i // 2}"])
    ds = load_labeled_dataset(tmp_path)
    info = label_info(ds)
    assert info.problem_type == "multi_label_classification" and info.names == ["jazz", "pop", "rock"]
    pooled = [(row["track_id"], sorted(info.names[j] for j in row["labels"])) for d in ds.values() for row in d]
    expected = {f"track{i // 2}" for i in range(16)}
    assert {t for t, _ in pooled} == expected
    assert ["pop", "rock"] in [labels for _, labels in pooled] and ["jazz", "pop"] in [labels for _, labels in pooled]
    tracks = {split: set(d["track_id"]) for split, d in ds.items()}
    assert not tracks["train"] & tracks["test"] and not tracks["train"] & tracks["validation"]
    assert to_multi_hot([0, 2], info.num_labels) == [1.0, 0.0, 1.0]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_labeled_dataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_labeled_dataset(empty)
    no_audio = tmp_path / "no_audio"
    (no_audio / "a").mkdir(parents=True)
    (no_audio / "a" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="no audio files"):
        load_labeled_dataset(no_audio)
    flat = tmp_path / "flat"
    _write_wav(flat / "x.wav")
    with pytest.raises(ValueError, match="no labels"):
        load_labeled_dataset(flat)
    bad_csv = tmp_path / "bad_csv"
    _write_wav(bad_csv / "x.wav")
    (bad_csv / "metadata.csv").write_text("path,label\nx.wav,rock\n")
    with pytest.raises(ValueError, match="no 'file_name' column"):
        load_labeled_dataset(bad_csv)
    (bad_csv / "metadata.csv").write_text("file_name,genre\nx.wav,rock\n")
    with pytest.raises(ValueError, match="no label column"):
        load_labeled_dataset(bad_csv)
    (bad_csv / "metadata.csv").write_text("file_name,label\nx.wav,rock\ny.wav,pop\n")
    with pytest.raises(ValueError, match="do not exist"):
        load_labeled_dataset(bad_csv)
    (bad_csv / "metadata.csv").write_text("file_name,label\nx.wav,\n")
    with pytest.raises(ValueError, match="without a label"):
        load_labeled_dataset(bad_csv)
    with pytest.raises(NotADirectoryError):
        load_labeled_dataset(bad_csv / "x.wav")
    with pytest.raises(ValueError, match="not in the class names"):
        (bad_csv / "metadata.csv").write_text("file_name,label\nx.wav,rock\n")
        load_labeled_dataset(bad_csv, names=["pop"])


@needs_renderer
def test_output_root_with_several_tasks_says_which_to_pass(built):
    out, _ = built
    with pytest.raises(ValueError, match="several tasks"):
        load_labeled_dataset(out)


@needs_renderer
def test_cross_validation_folds_by_piece(built):
    out, _ = built
    ds = load_labeled_dataset(out / "folk")
    folds = list(labeled.cross_validation_folds(ds, n_folds=3))
    assert len(folds) == 3
    test_ids = []
    for _, fold in folds:
        ids = {s: set(fold[s]["piece_id"]) for s in fold}
        assert not ids["test"] & ids["train"] and not ids["test"] & ids["validation"]
        assert not ids["train"] & ids["validation"]
        assert sum(len(v) for v in ids.values()) == 15
        test_ids += sorted(ids["test"])
    assert len(test_ids) == len(set(test_ids)) == 15  # every piece is tested exactly once
