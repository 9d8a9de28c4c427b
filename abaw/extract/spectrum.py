"""DeepSpectrum (Amiriparian et al. 2017) re-implemented: audio windows -> spectrogram images.

The original (github.com/DeepSpectrum/DeepSpectrum, `backend/plotting.py`,
`cli/configuration.py`), as the ABAW and MuSe ERI features used it:

- mono audio (librosa.load mono=True: channels averaged), at the file's own rate;
- windows of `window` s every `hop` s: chunk n = samples[n*hop : n*hop + window] for
  n < max(len // hop, 1), chunks shorter than the FFT dropped, timestamp n * hop;
- nfft = next power of two of 0.025 * sr; STFT with a periodic Hann window, hop nfft // 2,
  center=False; power |STFT|^2 -> 128 mel bands (librosa's Slaney filterbank, 0 .. sr/2;
  the CLI's `-m mel` mode, whose `-nm` defaults to 128: its default mode is `spectrogram`);
  `power_to_db(ref=max, top_db=None)`;
- drawn by `librosa.display.specshow(y_axis='mel', x_axis='time', fmax=sr/2,
  cmap='viridis')` on a 1 x 1 inch figure without axes, saved as PNG at dpi = 227 and read
  back without alpha; resized to the CNN's 224 px (PIL) and fed to an ImageNet DenseNet121,
  whose 1024-d `avg_pool` output is the feature.

`render_reference` draws a window with matplotlib exactly that way (specshow's geometry: one
quad per mel band between the midpoints of the band centres, on a symmetric-log frequency
axis, linthresh 1000 Hz, base 2) and is the `--reference` mode. `FastSpectrum` computes the
same image in torch, batched on the device: mel power in dB, each pixel's band and frame
looked up in precomputed tables (the same geometry, sampled straight at the CNN's 224 px),
coloured with viridis' 256-entry table; tests hold its images and features to a correlation
>= 0.99 with the reference's.
"""

from __future__ import annotations

import io

import numpy as np
import torch

N_MELS = 128
IMAGE_SIZE = 227  # deep.conf's plot size (dpi of the 1-inch figure)
LINTHRESH, BASE = 1000.0, 2.0  # librosa's symlog frequency axis for y_axis='mel'


def nfft_for(sr: int) -> int:
    """DeepSpectrum's default FFT size: the next power of two of 25 ms."""
    return 1 << (int(sr * 0.025) - 1).bit_length()


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz,
        min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
        f / f_sp,
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_frequencies(n: int, fmax: float) -> np.ndarray:
    """librosa.mel_frequencies(n, fmin=0, fmax, htk=False): Slaney's mel scale."""
    return _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n))


def mel_filterbank(sr: int, n_fft: int, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with Slaney normalisation: (n_mels, 1 + n_fft//2)."""
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, sr / 2)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights


def hann(n_fft: int) -> np.ndarray:
    """scipy.signal.get_window('hann', n_fft, fftbins=True): the periodic Hann window."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def mel_db(signal: np.ndarray, sr: int, n_mels: int = N_MELS) -> np.ndarray:
    """The mel power spectrogram in dB (ref = its max, no floor), NumPy: (n_mels, frames)."""
    n_fft = nfft_for(sr)
    hop = n_fft // 2
    frames = 1 + (len(signal) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(signal[idx].astype(np.float64) * hann(n_fft), axis=1)) ** 2
    mel = mel_filterbank(sr, n_fft, n_mels) @ spec.T
    db = 10 * np.log10(np.maximum(1e-10, mel))
    return db - 10 * np.log10(max(1e-10, float(mel.max())))


def mel_edges(sr: int, n_mels: int = N_MELS) -> np.ndarray:
    """specshow's band edges (librosa 0.8-0.9): 0, the midpoints of the centres, sr/2."""
    centres = mel_frequencies(n_mels, sr / 2)
    edges = centres.copy()
    edges[1:] -= 0.5 * np.diff(centres)
    return np.append(np.maximum(0, edges), [sr / 2])


def _symlog(x: np.ndarray) -> np.ndarray:
    """matplotlib's symlog transform (linthresh 1000, base 2, linscale 1), x >= 0."""
    adj = 1.0 / (1.0 - 1.0 / BASE)
    x = np.asarray(x, np.float64)
    safe = np.maximum(x, LINTHRESH)
    return np.where(
        x > LINTHRESH, LINTHRESH * (adj + np.log(safe / LINTHRESH) / np.log(BASE)), x * adj
    )


def _symlog_inv(t: np.ndarray) -> np.ndarray:
    adj = 1.0 / (1.0 - 1.0 / BASE)
    t = np.asarray(t, np.float64)
    lin = LINTHRESH * adj
    return np.where(t > lin, LINTHRESH * BASE ** ((t - lin) / LINTHRESH), t / adj)


def band_of_row(sr: int, size: int = IMAGE_SIZE, n_mels: int = N_MELS) -> np.ndarray:
    """The mel band drawn at each pixel row (top row first) of the rendered image."""
    edges = mel_edges(sr, n_mels)
    lo, hi = _symlog(edges[0]), _symlog(edges[-1])
    frac = (size - np.arange(size) - 0.5) / size  # pixel centres, from the top
    hz = _symlog_inv(lo + frac * (hi - lo))
    return np.clip(np.searchsorted(edges, hz, side="right") - 1, 0, n_mels - 1)


def render_reference(signal: np.ndarray, sr: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """The original's image of one window: matplotlib, 1 x 1 inch at dpi `size`, PNG, RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    db = mel_db(signal, sr)
    n_fft = nfft_for(sr)
    times = np.arange(db.shape[1] + 1) * (n_fft // 2) / sr
    fig = Figure(figsize=(1, 1), frameon=False)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    edges = mel_edges(sr)
    ax.pcolormesh(
        times, edges, db, cmap="viridis", shading="flat", edgecolors="none", rasterized=True
    )
    ax.set_yscale("symlog", linthresh=LINTHRESH, base=BASE)
    ax.set_xlim(times[0], times[-1])
    ax.set_ylim(edges[0], edges[-1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=size)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGBA"))[:, :, :3].copy()


def resize_reference(img: np.ndarray, size: int) -> np.ndarray:
    """The original's resize to the CNN input (PIL's default filter: bicubic)."""
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


def viridis_lut() -> np.ndarray:
    """matplotlib's viridis as 256 RGB rows (uint8), the colours the reference draws with."""
    import matplotlib

    return matplotlib.colormaps["viridis"](np.arange(256), bytes=True)[:, :3].copy()


class FastSpectrum:
    """DeepSpectrum images in torch, batched: windows (n, L) -> (n, 3, out, out) in [0, 1]."""

    def __init__(self, device: torch.device, out_size: int, size: int = IMAGE_SIZE) -> None:
        self.device, self.size, self.out_size = device, size, out_size
        self.lut = torch.from_numpy(viridis_lut()).to(device, torch.float32) / 255.0
        self.lut_planes = self.lut.t().contiguous()  # (3, 256): one gather per channel plane
        self._sr: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        # Output pixel i shows the drawn (size x size) image's pixel under its centre: the
        # resize to the CNN's input folded into the look-up (227 -> 224 moves no pixel by
        # more than half a source pixel, so no filter is needed; tested against PIL's).
        self._pick = np.minimum(
            ((np.arange(out_size) + 0.5) * size / out_size).astype(int), size - 1
        )

    def _tables(self, sr: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if sr not in self._sr:
            n_fft = nfft_for(sr)
            fb = torch.from_numpy(mel_filterbank(sr, n_fft)).to(self.device, torch.float32)
            win = torch.from_numpy(hann(n_fft)).to(self.device, torch.float32)
            rows = torch.from_numpy(band_of_row(sr, self.size)[self._pick]).to(self.device)
            self._sr[sr] = (fb, win, rows)
        return self._sr[sr]

    def images(self, signals: torch.Tensor, sr: int) -> torch.Tensor:
        """Equal-length windows of one sample rate (n, L) -> RGB images (n, 3, out, out)."""
        fb, win, rows = self._tables(sr)
        n_fft = win.numel()
        x = signals.to(self.device, torch.float32)
        spec = (
            torch.stft(
                x, n_fft, hop_length=n_fft // 2, window=win, center=False, return_complex=True
            ).abs()
            ** 2
        )  # (n, bins, frames)
        mel = torch.matmul(fb, spec)  # (n, mels, frames)
        db = 10 * torch.log10(mel.clamp_min(1e-10))
        db = db - 10 * torch.log10(mel.amax(dim=(1, 2), keepdim=True).clamp_min(1e-10))
        lo = db.amin(dim=(1, 2), keepdim=True)
        span = db.amax(dim=(1, 2), keepdim=True) - lo
        norm = torch.where(span > 0, (db - lo) / span.clamp_min(1e-12), torch.zeros_like(db))
        colour = (norm * 256).long().clamp(0, 255)  # the colour of each band and frame, small
        frames = db.shape[2]
        drawn = torch.from_numpy(self._pick).to(self.device)
        cols = ((drawn + 0.5) * frames / self.size).long().clamp(max=frames - 1)
        small = self.lut_planes[:, colour]  # (3, n, mels, frames): colours before enlarging
        img = small.index_select(2, rows).index_select(3, cols)  # (3, n, out, out)
        return img.transpose(0, 1)  # (n, 3, out, out) in [0, 1]
