"""Generated recordings for the tests: every encoding soundfile can write, at any rate."""
from __future__ import annotations

import pathlib

import numpy as np
import soundfile as sf

# name -> (container, subtype, extension)
ENCODINGS = {
    'wav16': ('WAV', 'PCM_16', 'wav'),
    'wav24': ('WAV', 'PCM_24', 'wav'),
    'wav32': ('WAV', 'PCM_32', 'wav'),
    'wavfloat': ('WAV', 'FLOAT', 'wav'),
    'flac': ('FLAC', 'PCM_16', 'flac'),
    'ogg': ('OGG', 'VORBIS', 'ogg'),
    'opus': ('OGG', 'OPUS', 'opus'),
    'mp3': ('MP3', 'MPEG_LAYER_III', 'mp3'),
}
LOSSLESS = {'wav16', 'wav24', 'wav32', 'wavfloat', 'flac'}
RATES = (8000, 16000, 22050, 32000, 44100, 48000, 96000)
# What the encoders accept (libsndfile 1.2): Opus only 8/12/16/24/48 kHz, MP3 at most 48 kHz.
SUPPORTED_RATES = {'opus': {8000, 16000, 48000}, 'mp3': set(RATES) - {96000}}


def encodable(encoding: str, rate: int) -> bool:
    return rate in SUPPORTED_RATES.get(encoding, set(RATES))


def tone_signal(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A test signal whose content differs from second to second: [frames, channels].

    A tone whose frequency steps every second (within every rate's band) plus a little noise;
    the second channel, if any, carries a different tone so a mix-down is visible.
    """
    frames = round(seconds * rate)
    t = np.arange(frames) / rate
    step = np.floor(t)
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * (500 + 150 * (step % 10)) * t)
    left += 0.01 * rng.standard_normal(frames)
    columns = [left]
    if channels > 1:
        columns += [0.2 * np.sin(2 * np.pi * 1200 * t)] * (channels - 1)
    return np.stack(columns, axis=1).astype(np.float32)


def write(path: pathlib.Path, signal: np.ndarray, rate: int, encoding: str = 'wavfloat'
          ) -> pathlib.Path:
    """Writes ``signal`` in blocks (one long write makes soundfile's OGG output unreadable)."""
    container, subtype, _ = ENCODINGS[encoding]
    with sf.SoundFile(path, 'w', rate, signal.shape[1], format=container, subtype=subtype) as out:
        for start in range(0, len(signal), rate):
            out.write(signal[start:start + rate])
    return path


def make_recording(directory: pathlib.Path, stem: str, seconds: float, rate: int,
                   encoding: str = 'wavfloat', channels: int = 1, seed: int = 0
                   ) -> tuple[pathlib.Path, np.ndarray]:
    extension = ENCODINGS[encoding][2]
    signal = tone_signal(seconds, rate, channels, seed)
    return write(directory / f'{stem}.{extension}', signal, rate, encoding), signal
