"""The reader's search for a face's mark: where, around its re-detection, the mark lies.

A mark is read in the frame it was embedded in; re-detection after a resize, a crop or a codec
misplaces that frame by more than the carriers tolerate, so a reader of a
:class:`~refacex_plugin.watermark.SearchableWatermark` searches zooms, turns, shifts and carrier
gains around the re-detection, coarse to fine (:func:`refine`), hill-climbs the best reading
(:func:`polish`) and, failing a codeword, searches again from a finer grid's best points
(:func:`beam`) and from a wide grid (:func:`wide_search`). Every setting is a
:class:`~refacex_plugin.channel.ReaderConfig` field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..geometry import AlignConfig, extract_crops, perturb_about, perturbations_about, translate_after
from ..watermark import SearchableWatermark, Watermark
from .config import ReaderConfig, Stage
from .opening import Accept, is_codeword, is_spent


def face_logits(
    rgb: np.ndarray,
    m_img2crop: torch.Tensor,
    watermark: Watermark,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    sync: bool = True,
    accept: Accept | None = None,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor]:
    """Read the channel-bit logits of the faces of ``rgb (H, W, 3)`` aligned by ``m_img2crop (N, 2, 3)``.

    With ``sync`` (and a :class:`~refacex_plugin.watermark.SearchableWatermark`) each face's crop is
    searched for the mark (:func:`search_face`) until a reading is ``accept``-ed (default: a
    codeword, :func:`~refacex_plugin.channel.is_codeword`).
    Returns ``logits (N, bits)`` and the transforms they were read in ``(N, 2, 3)``."""
    if m_img2crop.shape[0] == 0:
        return np.zeros((0, watermark.bits), np.float32), m_img2crop
    if not sync or not isinstance(watermark, SearchableWatermark):
        crops = extract_crops(rgb, m_img2crop, align, device, window=watermark.carrier_window)
        with torch.inference_mode():
            return watermark.extract(crops).float().cpu().numpy(), m_img2crop
    accept = accept or is_codeword
    found = [search_face(rgb, m_img2crop[i : i + 1], watermark, align, device, accept, config=config) for i in range(m_img2crop.shape[0])]
    return np.stack([f[0] for f in found]), torch.cat([f[1] for f in found])


def search_face(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept,
    fallbacks: bool = True,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """Where one face's mark lies in ``rgb (H, W, 3)`` (``m (1, 2, 3)``: its re-detection):
    ``(logits (bits,), transform (1, 2, 3), its parameters)`` (:func:`refine`).

    First a local search around the re-detection (:attr:`~ReaderConfig.local_stages`), whose
    reading is kept if ``accept`` takes it (:func:`~refacex_plugin.channel.is_codeword`: its hard
    bits are a codeword of the payload's error correction, which needs no key, random bits are one
    with odds under 2^-18; or :func:`~refacex_plugin.channel.payload_opener`: that, or it opens
    under a key); else the whole search, wide stages first, and of the two the codeword, or failing
    one, the more confident reading. Between the two, the local search again from the most
    confident points of a finer grid (:attr:`~ReaderConfig.search_beam`). Why both: after a strong
    distortion (JPEG Q50, WebP) the wide stage's coarse grid holds no point close enough to read
    the weakened mark, and its most confident point is a chance one that the finer stages cannot
    leave; the re-detection itself lies within 0.3-3 px of the mark there (measured on 15 LFW faces
    after JPEG Q50: the mark read in its own frame was 0.32-0.44 confident, the wide search's
    reading 0.26-0.28, 8-38 vs 117-146 wrong bits).
    A reading that is no codeword is polished (:func:`polish`) before the next try.
    Without ``fallbacks``, the local search and its polish only
    (:func:`~refacex_plugin.channel.read_marks` runs the beam and the wide search later, among its
    other fallbacks, within the face's :class:`~refacex_plugin.channel.ReadingBudget`). An
    ``accept`` that is a :class:`~refacex_plugin.channel.ReadingBudget` ends the search once spent."""

    def codeword(read):
        return accept(read[0], read[1])

    local = refine(rgb, m, watermark, align, device, config.local_stages, config=config)
    if codeword(local) or is_spent(accept):
        return local
    local = polish(rgb, m, watermark, align, device, local[2], config=config)
    if codeword(local) or not fallbacks:
        return local
    read = beam(rgb, m, watermark, align, device, accept, config=config)
    if read is not None:
        return read
    wide = wide_search(rgb, m, watermark, align, device, accept, config=config)
    return wide if wide[3] else max((local, wide[:3]), key=lambda read: float(np.abs(read[0]).mean()))


def beam(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple] | None:
    """The first reading ``accept`` takes from the beam's starts around ``m (1, 2, 3)`` (each
    refined from :attr:`~ReaderConfig.beam_from_stage` on, then polished), as :func:`refine`
    returns it, or None."""
    for start in _beam_starts(rgb, m, watermark, align, device, config=config):
        if is_spent(accept):
            return None
        read = refine(rgb, start, watermark, align, device, config.sync_stages[config.beam_from_stage :], config=config)
        if accept(read[0], read[1]):
            return read
        if is_spent(accept):
            return None
        read = polish(rgb, start, watermark, align, device, read[2], config=config)
        if accept(read[0], read[1]):
            return read
    return None


def wide_search(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple, bool]:
    """The whole search from ``m (1, 2, 3)``, wide stages first, then polished: the reading (as
    :func:`refine` returns it) and whether ``accept`` took it."""
    wide = refine(rgb, m, watermark, align, device, config.sync_stages, config=config)
    if accept(wide[0], wide[1]):
        return (*wide, True)
    if is_spent(accept):
        return (*wide, False)
    wide = polish(rgb, m, watermark, align, device, wide[2], config=config)
    return (*wide, bool(accept(wide[0], wide[1])))


def _search_window(watermark: SearchableWatermark, size: int, config: ReaderConfig) -> tuple[int, int, int, int] | None:
    """The part ``(y0, y1, x0, x1)`` of each ``size``-pixel crop the search reads: the carriers'
    window widened by :attr:`~ReaderConfig.search_reach` (None: whole crops)."""
    win = watermark.carrier_window
    if win is None:
        return None
    y0, y1, x0, x1 = win
    r = config.search_reach
    return max(y0 - r, 0), min(y1 + r, size), max(x0 - r, 0), min(x1 + r, size)


def refine(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    stages: Sequence[Stage],
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """The most confident reading of one face of ``rgb (H, W, 3)`` around ``m (1, 2, 3)`` over
    ``stages`` (each centred on the last's best) and :attr:`~ReaderConfig.sync_gains` (coarse
    after the first stage, fine after the last, where :attr:`~ReaderConfig.sync_falloffs` are also
    tried): ``(logits (bits,), transform (1, 2, 3), (scale, turn, dx, dy, gain, falloff))``, the
    transform being ``translate_after(perturb_about(m, scale, turn), -dx, -dy)``."""
    scale, angle, shift, frac, gain, falloff = 1.0, 0.0, (0, 0), (0.0, 0.0), 1.0, 1.0
    centre = align.size / 2
    for stage, spec in enumerate(stages):
        # a gains-first watermark's first stage reads the frame at every coarse gain at once (its
        # carriers read nothing at a wrong gain); otherwise at the gain found so far
        every_gain = stage == 0 and watermark.gains_first and _stage_readings(spec) <= config.gains_first_readings
        tried = config.sync_gains[0] if every_gain else (gain,)
        grid, shifts, crops, logits = _read_stage(
            rgb,
            m,
            watermark,
            align,
            device,
            spec,
            (scale, angle, shift, frac),
            [watermark.carrier_gains(k, falloff) for k in tried],
            config=config,
        )
        conf = logits.float().abs().mean(-1)
        g, t, k = np.unravel_index(int(conf.argmax()), conf.shape)
        gain = tried[k]
        (scale, angle, frac), shift, best = grid[g], tuple(shifts[t].tolist()), logits[g, t, k]
        if stage in (0, len(stages) - 1):  # the contrast gain: coarse after the first stage, fine after the last
            pairs = [(k, 1.0) for k in config.sync_gains[0]] if stage == 0 else [(gain + k, 1.0) for k in config.sync_gains[1]]
            n_plain = len(pairs)
            if stage == len(stages) - 1:  # and a low-pass falloff, if one reads clearly better
                pairs += [(gain * k, f) for f in config.sync_falloffs[0][1:] for k in config.sync_falloff_gains]
            gains = torch.stack([watermark.carrier_gains(k, f) for k, f in pairs])
            with torch.inference_mode():
                by_gain = watermark.extract_shifted(crops[g : g + 1], shifts[t : t + 1], gains)[0, 0]  # (P, bits)
            conf = by_gain.float().abs().mean(-1)
            k = int(conf.argmax())
            plain = int(conf[:n_plain].argmax())
            k = k if float(conf[k]) > config.falloff_margin * float(conf[plain]) else plain
            if pairs[k][1] != 1.0:  # refine the falloff taken
                gain, falloff = pairs[k]
                pairs = [(gain + a, falloff + b) for b in config.sync_falloffs[1] for a in config.sync_gains[1]]
                gains = torch.stack([watermark.carrier_gains(a, b) for a, b in pairs])
                with torch.inference_mode():
                    by_gain = watermark.extract_shifted(crops[g : g + 1], shifts[t : t + 1], gains)[0, 0]
                k = int(by_gain.float().abs().mean(-1).argmax())
            (gain, falloff), best = pairs[k], by_gain[k]
    params = (scale, angle, float(shift[0] + frac[0]), float(shift[1] + frac[1]), float(gain), float(falloff))
    return best.float().cpu().numpy(), reading_frame(m, params, centre), params


def _stage_readings(spec: Stage) -> int:
    """Crops x shifts one stage of the search reads (per gain)."""
    zoom_step, turn_step, side, shift_step, radius = spec
    n = int(round(2 * radius / shift_step)) + 1 if shift_step else 1
    return (2 * side + 1) ** 2 * n * n


def _read_stage(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    spec: Stage,
    at: tuple,
    gains: list[torch.Tensor],
    *,
    config: ReaderConfig,
) -> tuple[list, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stage of the search (``spec``: a :data:`~refacex_plugin.channel.config.Stage`) around ``at = (scale, turn,
    whole-pixel shift, fractional shift)`` from ``m (1, 2, 3)``, read at each of ``gains`` (the
    watermark's ``carrier_gains``). Returns ``(grid, shifts, crops, logits)``: the grid's ``(scale,
    turn, fractional shift)`` per crop, the whole-pixel shifts ``(T, 2)`` read from each crop, the
    crops and ``logits (G, T, len(gains), bits)``."""
    zoom_step, turn_step, side, shift_step, radius = spec
    scale, angle, shift, frac = at
    zooms_turns = [(scale + i * zoom_step, angle + j * turn_step) for i in range(-side, side + 1) for j in range(-side, side + 1)]
    steps = torch.arange(-radius, radius + shift_step / 2, shift_step) if shift_step else torch.zeros(1)
    offsets = [(float(x), float(y)) for y in steps for x in steps]
    if shift_step >= 1:  # whole pixels: every shift read from one crop
        grid = [(s, a, frac) for s, a in zooms_turns]
        shifts = torch.tensor([[shift[0] + x, shift[1] + y] for x, y in offsets], dtype=torch.long)
    else:  # fractions of a pixel: one resampled crop each
        grid = [(s, a, (frac[0] + x, frac[1] + y)) for s, a in zooms_turns for x, y in offsets]
        shifts = torch.tensor([shift], dtype=torch.long)
    ms = perturbations_about(m, [(s, a, -f[0], -f[1]) for s, a, f in grid], align.size / 2)
    crops = extract_crops(rgb, ms, align, device, luma=True, window=_search_window(watermark, align.size, config))
    with torch.inference_mode():
        logits = watermark.extract_shifted(crops, shifts, torch.stack(gains))  # (G, T, P, bits)
    return grid, shifts, crops, logits


def _beam_starts(
    rgb: np.ndarray, m: torch.Tensor, watermark: SearchableWatermark, align: AlignConfig, device, *, config: ReaderConfig = ReaderConfig()
) -> list[torch.Tensor]:
    """The frames ``(1, 2, 3)`` of the :attr:`~ReaderConfig.search_beam` most confident points of
    :attr:`~ReaderConfig.beam_grid` around ``m (1, 2, 3)`` (each read at every coarse gain), most
    confident first."""
    zoom_step, turn_step, side, shift_step, radius = config.beam_grid
    fractions = np.arange(0.0, 1.0, shift_step)
    grid = [
        (1.0 + i * zoom_step, j * turn_step, (float(fx), float(fy)))
        for i in range(-side, side + 1)
        for j in range(-side, side + 1)
        for fy in fractions
        for fx in fractions
    ]
    steps = range(-int(radius), int(radius) + 1)
    shifts = torch.tensor([[x, y] for y in steps for x in steps], dtype=torch.long)
    ms = perturbations_about(m, [(s, a, -f[0], -f[1]) for s, a, f in grid], align.size / 2)
    crops = extract_crops(rgb, ms, align, device, luma=True, window=_search_window(watermark, align.size, config))
    with torch.inference_mode():
        logits = watermark.extract_shifted(crops, shifts, torch.stack([watermark.carrier_gains(k, 1.0) for k in config.sync_gains[0]]))
    conf = logits.float().abs().mean(-1).amax(-1).flatten()  # (G * T,)
    starts = []
    for idx in torch.argsort(conf, descending=True)[: config.search_beam].tolist():
        (s, a, f), t = grid[idx // len(shifts)], shifts[idx % len(shifts)].tolist()
        starts.append(reading_frame(m, (s, a, t[0] + f[0], t[1] + f[1]), align.size / 2))
    return starts


def reading_frame(m: torch.Tensor, params: tuple, centre: float) -> torch.Tensor:
    """The transform ``(1, 2, 3)`` a reading's ``(scale, turn, dx, dy, gain, falloff)`` (or just
    their first four) stand for, from the re-detection ``m (1, 2, 3)``; ``centre``: the crop's
    centre in crop pixels, which zoom and turn keep in place."""
    scale, angle, dx, dy = params[:4]
    return translate_after(perturb_about(m, scale, angle, centre), -float(dx), -float(dy))


def polish(
    rgb: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    params: tuple,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """Hill-climb a reading's confidence from ``params`` (:func:`refine`'s, around ``m (1, 2, 3)``):
    step each of zoom, turn, shift, gain and falloff both ways, move to the most confident
    neighbour while one is better, then halve the steps (:attr:`~ReaderConfig.polish_steps`,
    :attr:`~ReaderConfig.polish_rounds` rounds of at most :attr:`~ReaderConfig.polish_moves`
    moves). Returns the polished reading, as :func:`refine` does.

    Why: after JPEG Q50 or WebP the grid's stages often end near the mark but not on it (up to
    0.5 deg, 0.3 px and 1.3 % in zoom away), and that costs up to 49 wrong bits; in its own frame
    the mark is read more confidently than where the stages ended, every time (20 such faces of 60
    LFW originals, 16 of them near, ad hoc). ``python research/watermark_sync.py --decode --host
    none --faces 100 --rows jpeg_q50,webp_q80 --seed 8`` with fixed keys, without / with: reads
    within 21 wrong bits 73 -> 82 % after JPEG Q50 and 68 -> 78 % after WebP (in the mark's own
    frame: 91 / 88 %), recovery codes opened 45 -> 57 % and 42 -> 55 % (measured with hard and
    Chase decoding only, without ordered statistics)."""
    centre = align.size / 2
    window = _search_window(watermark, align.size, config)
    zero = torch.zeros(1, 2, dtype=torch.long)
    p = list(params)

    def read(crops, gain, falloff):
        with torch.inference_mode():
            return watermark.extract_shifted(crops, zero, watermark.carrier_gains(gain, falloff))[:, 0].float()  # (B, bits)

    crop = extract_crops(rgb, reading_frame(m, p, centre), align, device, luma=True, window=window)
    best = read(crop, p[4], p[5])[0]
    conf = float(best.abs().mean())
    steps = list(config.polish_steps)
    for _ in range(config.polish_rounds):
        for _ in range(config.polish_moves):
            moved = [p[:d] + [p[d] + sign * steps[d]] + p[d + 1 :] for d in range(4) for sign in (-1, 1)]
            crops = extract_crops(
                rgb, perturbations_about(m, [(q[0], q[1], -q[2], -q[3]) for q in moved], centre), align, device, luma=True, window=window
            )
            regained = [p[:d] + [p[d] + sign * steps[d]] + p[d + 1 :] for d in ((4, 5) if p[5] != 1.0 else (4,)) for sign in (-1, 1)]
            reads = torch.cat([read(crops, p[4], p[5])] + [read(crop, q[4], q[5]) for q in regained])
            confs = reads.abs().mean(-1)
            k = int(confs.argmax())
            if float(confs[k]) <= conf:
                break
            p, best, conf = (moved + regained)[k], reads[k], float(confs[k])
            crop = crops[k : k + 1] if k < len(moved) else crop
        steps = [v / 2 for v in steps]
    params = tuple(float(v) for v in p)
    return best.cpu().numpy(), reading_frame(m, params, centre), params
