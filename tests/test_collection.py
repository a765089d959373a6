"""`musicoder-embed`: a folder of music in, Parquet parts of embeddings out; failures recorded and the run goes on;
resumable after `kill -9` with every file exactly once; split across processes by accelerate."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from test_hub_integration import SAMPLING_RATE, music_like_clip

from musicoder_hf import MusiCoderConfig, MusiCoderEmbedder, MusiCoderFeatureExtractor, MusiCoderForPreTraining
from musicoder_hf.collection import SOME_FILES_FAILED, collect_files, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny encoder with a 64-frame window (1.5 s): the clips below are read in several windows."""
    folder = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    config = MusiCoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=64, classifier_pooling="mean_std")
    MusiCoderForPreTraining(config).save_pretrained(folder)
    MusiCoderFeatureExtractor().save_pretrained(folder)
    return folder


def write_music(folder: Path, count: int, seconds: float = 3.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"album_{index % 2}" / f"track_{index:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, music_like_clip(seconds=seconds + 0.25 * (index % 3), seed=index), SAMPLING_RATE)
        paths.append(path)
    return paths


def rows_of(output_dir: Path) -> list[dict]:
    rows = []
    for part in sorted((output_dir / "embeddings").glob("part-*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def failures_of(output_dir: Path) -> dict[str, str]:
    with open(output_dir / "failures.csv", newline="") as handle:
        return {row["path"]: row["reason"] for row in csv.DictReader(handle)}


def test_inputs_are_folders_globs_files_and_lists(tmp_path):
    music = write_music(tmp_path / "music", 4)
    (tmp_path / "music" / "notes.txt").write_text("not audio")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nmusic/album_0/track_00.wav,x\nmissing.flac,y\n")
    found = collect_files([str(tmp_path / "music" / "album_1"), str(tmp_path / "music" / "album_0" / "*.wav"),
                           str(listing), str(music[0])])
    assert found == [music[1].absolute(), music[3].absolute(), music[0].absolute(), music[2].absolute(),
                     (tmp_path / "missing.flac").absolute()]


def test_embeds_a_folder_records_failures_resumes_and_replaces_changed_files(checkpoint, tmp_path, capsys):
    music = write_music(tmp_path / "music", 5)
    bad = tmp_path / "music" / "bad"
    bad.mkdir()
    (bad / "corrupt.mp3").write_bytes(os.urandom(3000))
    soundfile.write(bad / "short.wav", music_like_clip(seconds=0.1), SAMPLING_RATE)
    (bad / "empty.flac").write_bytes(b"")
    listing = tmp_path / "more.txt"
    listing.write_text(f"{music[0]}\n{tmp_path / 'gone.wav'}\n")
    output = tmp_path / "out"
    command = ["--model_name_or_path", str(checkpoint), "--inputs", str(tmp_path / "music"), str(listing),
               "--output_dir", str(output), "--files_per_part", "3", "--num_workers", "2"]

    assert main(command) == SOME_FILES_FAILED
    assert "4 file(s) could not be used" in capsys.readouterr().err
    failures = failures_of(output)
    assert set(failures) == {str(bad / "corrupt.mp3"), str(bad / "short.wav"), str(bad / "empty.flac"),
                             str(tmp_path / "gone.wav")}
    assert "corrupt or not an audio file" in failures[str(bad / "corrupt.mp3")]
    assert "too short: 0.10 s" in failures[str(bad / "short.wav")]
    assert "empty (0 bytes)" in failures[str(bad / "empty.flac")]
    assert "not found" in failures[str(tmp_path / "gone.wav")]

    rows = {row["path"]: row for row in rows_of(output)}
    assert sorted(rows) == sorted(str(path) for path in music)
    embedder = MusiCoderEmbedder.from_pretrained(checkpoint)
    for path in music:
        expected = embedder(str(path)).embeddings.flatten().numpy()  # every layer, mean and std, concatenated
        np.testing.assert_allclose(rows[str(path)]["embedding"], expected, atol=1e-5, rtol=1e-4)
        assert rows[str(path)]["duration"] == pytest.approx(soundfile.info(path).duration)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["this_run"]["files_done"] == 5 and summary["this_run"]["files_failed"] == 4
    assert summary["settings"]["layers"] == [0, 1, 2] and summary["settings"]["pooling"] == "mean_std"
    assert summary["this_run"]["x_real_time"] > 0

    # A rerun does nothing but report; a changed file is embedded again and keeps one row.
    parts = sorted(p.name for p in (output / "embeddings").iterdir())
    assert main(command) == SOME_FILES_FAILED
    assert sorted(p.name for p in (output / "embeddings").iterdir()) == parts
    assert json.loads((output / "summary.json").read_text())["files_skipped_already_done"] == 9
    soundfile.write(music[2], music_like_clip(seconds=5.0, seed=99), SAMPLING_RATE)
    main(command)
    rows = rows_of(output)
    assert sorted(row["path"] for row in rows) == sorted(str(path) for path in music)
    assert next(row for row in rows if row["path"] == str(music[2]))["duration"] == pytest.approx(5.0)

    # Another model (or other settings) in the same folder is refused, not mixed in.
    assert main([*command, "--pooling", "mean"]) == 1
    assert "another model or other settings" in capsys.readouterr().err


def test_frame_embeddings_with_timestamps(checkpoint, tmp_path):
    music = write_music(tmp_path / "music", 2)
    output = tmp_path / "out"
    assert main(["--model_name_or_path", str(checkpoint), "--inputs", str(tmp_path / "music"), "--output_dir",
                 str(output), "--frame_embeddings", "--layers", "-1", "--pooling", "mean", "--num_workers", "0"]) == 0
    row = next(row for row in rows_of(output) if row["path"] == str(music[1]))
    frames = np.asarray(row["frame_embeddings"])
    assert frames.shape == (1 + int(3.25 * SAMPLING_RATE) // 1024, 32) and len(row["timestamps"]) == len(frames)
    np.testing.assert_allclose(row["timestamps"][1], 1024 / SAMPLING_RATE, rtol=1e-6)
    np.testing.assert_allclose(row["embedding"], frames.mean(0), atol=1e-5)
    expected = MusiCoderEmbedder.from_pretrained(checkpoint)(str(music[1]), layers=-1, pooling=None)
    np.testing.assert_allclose(frames, expected.embeddings[0].numpy(), atol=1e-5, rtol=1e-4)


def test_frame_stride_reads_one_frame_of_every_n_as_the_embedder_does(checkpoint, tmp_path, capsys):
    music = write_music(tmp_path / "music", 2)
    output = tmp_path / "out"
    command = ["--model_name_or_path", str(checkpoint), "--inputs", str(tmp_path / "music"), "--output_dir",
               str(output), "--frame_embeddings", "--layers", "-1", "--num_workers", "0", "--frame_stride", "3"]
    assert main(command) == 0
    row = next(row for row in rows_of(output) if row["path"] == str(music[1]))
    expected = MusiCoderEmbedder.from_pretrained(checkpoint, frame_stride=3)(str(music[1]), layers=-1, pooling=None)
    np.testing.assert_allclose(np.asarray(row["frame_embeddings"]), expected.embeddings[0].numpy(), atol=1e-5,
                               rtol=1e-4)
    np.testing.assert_allclose(row["timestamps"], expected.timestamps.numpy(), rtol=1e-6)
    assert len(row["timestamps"]) == -(-(1 + int(3.25 * SAMPLING_RATE) // 1024) // 3)
    assert json.loads((output / "summary.json").read_text())["settings"]["frame_stride"] == 3
    # Exact embeddings are not mixed into a folder of patchout embeddings.
    assert main([*command[:-1], "1"]) == 1
    assert "another model or other settings" in capsys.readouterr().err


def embed_command(checkpoint, music_dir, output, *extra):
    return [sys.executable, "-m", "musicoder_hf.collection", "--model_name_or_path", str(checkpoint), "--inputs",
            str(music_dir), "--output_dir", str(output), "--files_per_part", "2", "--num_workers", "1", *extra]


def test_kill_9_mid_run_then_resume_gives_every_file_exactly_once(checkpoint, tmp_path):
    music = write_music(tmp_path / "music", 14, seconds=4.0)
    output = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    process = subprocess.Popen(embed_command(checkpoint, tmp_path / "music", output), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((output / "embeddings").glob("part-*.parquet"))) < 2:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its decoding workers, mid-run
    process.wait()
    before = rows_of(output)
    assert 4 <= len(before) < len(music), len(before)
    assert not (output / "summary.json").exists()

    done = subprocess.run(embed_command(checkpoint, tmp_path / "music", output), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    paths = [row["path"] for row in rows_of(output)]
    assert sorted(paths) == sorted(str(path) for path in music)  # each exactly once
    summary = json.loads((output / "summary.json").read_text())
    assert summary["files_skipped_already_done"] == len(before)
    assert summary["this_run"]["files_done"] == len(music) - len(before)
    assert not list(output.rglob(".*.tmp"))  # no temporary file left behind by the kill is ever read as a part


def test_two_processes_with_accelerate_launch_cover_each_file_once(checkpoint, tmp_path):
    music = write_music(tmp_path / "music", 7)
    output = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "musicoder_hf.collection"]
    done = subprocess.run([*launch, *embed_command(checkpoint, tmp_path / "music", output)[3:]], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(output)
    assert sorted(row["path"] for row in rows) == sorted(str(path) for path in music)
    processes = {part.name.rsplit("-", 2)[1] for part in (output / "embeddings").glob("part-*.parquet")}
    assert processes == {"p0", "p1"}
    summary = json.loads((output / "summary.json").read_text())
    assert summary["this_run"]["processes"] == 2 and summary["this_run"]["files_done"] == 7


def test_classify_writes_the_pipelines_top_labels_for_every_file(tmp_path):
    from test_hub_integration import save_classifier
    from transformers import pipeline

    from musicoder_hf.collection import classify_main

    folder = tmp_path / "classifier"
    save_classifier(folder)
    music = write_music(tmp_path / "music", 3, seconds=40.0)  # longer than the 1600-frame window
    (tmp_path / "music" / "broken.wav").write_bytes(b"RIFF not really")
    output = tmp_path / "out"
    assert classify_main(["--model_name_or_path", str(folder), "--inputs", str(tmp_path / "music"), "--output_dir",
                          str(output), "--top_k", "2", "--num_workers", "0"]) == SOME_FILES_FAILED
    with open(output / "predictions.csv", newline="") as handle:
        predictions = {row["path"]: row for row in csv.DictReader(handle)}
    assert sorted(predictions) == sorted(str(path) for path in music)
    assert list(next(iter(predictions.values()))) == ["path", "duration", "label_1", "score_1", "label_2", "score_2"]
    classifier = pipeline("audio-classification", model=str(folder))
    for path in music:
        expected = classifier(str(path), top_k=2)
        row = predictions[str(path)]
        assert [row["label_1"], row["label_2"]] == [e["label"] for e in expected]
        np.testing.assert_allclose([float(row["score_1"]), float(row["score_2"])], [e["score"] for e in expected],
                                   atol=1e-5)
    assert "broken.wav" in (output / "failures.csv").read_text()
    assert classify_main(["--model_name_or_path", str(folder), "--inputs", str(tmp_path / "music"), "--output_dir",
                          str(tmp_path / "out2"), "--format", "parquet", "--num_workers", "0"]) == SOME_FILES_FAILED
    table = pq.read_table(tmp_path / "out2" / "predictions.parquet").to_pylist()
    assert len(table) == 3 and len(table[0]["labels"]) == 4  # top_k 5 is capped at the 4 labels


def test_search_finds_the_same_piece_and_the_command_prints_it(checkpoint, tmp_path, capsys):
    """Each piece twice (the second at another level): its nearest neighbour in the index is its other copy, as
    `EmbeddingIndex` and `musicoder-search` report it."""
    from musicoder_hf.search import EmbeddingIndex
    from musicoder_hf.search import main as search_main

    folder = tmp_path / "music"
    folder.mkdir()
    for piece in range(5):
        clip = music_like_clip(seconds=4.0, seed=10 * piece)
        soundfile.write(folder / f"piece{piece}_a.wav", clip, SAMPLING_RATE)
        soundfile.write(folder / f"piece{piece}_b.wav", 0.7 * clip, SAMPLING_RATE)
    output = tmp_path / "index"
    assert main(["--model_name_or_path", str(checkpoint), "--inputs", str(folder), "--output_dir", str(output),
                 "--num_workers", "0"]) == 0
    index = EmbeddingIndex.load(output)
    queries = [str(folder / f"piece{piece}_a.wav") for piece in range(5)]
    for query, found in zip(queries, index.search_paths(queries, k=3)):
        assert query not in [path for path, _ in found]  # a query does not find itself
        assert found[0][0] == query.replace("_a.wav", "_b.wav"), found
        assert 1.0 >= found[0][1] > found[1][1] > found[2][1]
    # A file outside the index is embedded with the index's model and settings.
    outside = tmp_path / "query.wav"
    soundfile.write(outside, 0.5 * music_like_clip(seconds=4.0, seed=30), SAMPLING_RATE)
    assert {path for path, _ in index.search_audio(str(outside), k=2)} == {str(folder / "piece3_a.wav"),
                                                                          str(folder / "piece3_b.wav")}
    capsys.readouterr()
    assert search_main(["--index_dir", str(output), "--query", str(outside), queries[0], "--k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[queries[0]][0][0] == queries[0].replace("_a.wav", "_b.wav") and len(printed[str(outside)]) == 2
    assert search_main(["--index_dir", str(tmp_path / "nothing"), "--query", queries[0]]) == 1
    assert "holds no embeddings" in capsys.readouterr().err
