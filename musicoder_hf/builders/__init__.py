"""Dataset builders: tooling behind the `musicoder-data` console script, not part of the library.

`musicoder-data build-corpus` (Debian game-soundtrack packages -> unlabeled clips) and `musicoder-data build-tasks`
(the music21 corpus rendered with fluidsynth -> labeled tasks) write Hugging Face `audiofolder` datasets. They need
the optional extra `data` (`pip install "musicoder-hf[data]"`) and Debian packages (`dpkg-deb`/`apt-get`,
`fluidsynth`, `fluid-soundfont-gm`, `ffmpeg`; `make system-deps`). The library (`musicoder_hf` and
`musicoder_hf.data`) never imports this package: it reads the folders these builders write like any other.
"""
