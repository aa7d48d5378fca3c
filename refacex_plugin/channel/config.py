"""What the embedder and the reader do, each setting with the measurement that chose its value.

Frozen, and passed to the call that uses them (``read_payloads(..., config=replace(ReaderConfig(),
polish_rounds=0))``): a study of one setting changes that call only, nothing else in the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: One stage of the mark search: ``(zoom step, turn step in degrees, points a side, shift step, shift
#: radius)``, shifts in crop pixels; a zoom and turn grid of ``(2 * side + 1)^2`` points, each read
#: at every shift within the radius.
Stage = tuple[float, float, int, float, float]


@dataclass(frozen=True)
class ReaderConfig:
    """How a reader finds each face's mark and when it stops looking (:mod:`~refacex_plugin.channel.search`,
    :mod:`~refacex_plugin.channel.fallbacks`, :mod:`~refacex_plugin.channel.reading`)."""

    #: Faces whose eyes lie closer than this many image pixels (as detected) are not read, and the
    #: embedder does not call a mark in one ``embedded``: a mark does not survive in so small a face
    #: (``python research/watermark_min_face.py --faces 15 --eyes 8,10,12``: of 15 LFW faces
    #: shrunk to 8 px between the eyes 2 were detected, and neither opened; at 10 and 12 px all 15 were
    #: detected and none opened even unchanged), while a search that finds no mark costs a reader
    #: 2-5 s of fallbacks, most of ``refacex extract``'s time on an image with a small background
    #: face. Skipping a face only removes readings, so it cannot open a payload that was not there.
    min_read_eyes: float = 10.0

    #: The search for the mark around each re-detected face, for a
    #: :class:`~refacex_plugin.watermark.SearchableWatermark`: coarse to fine over zooms, turns
    #: (degrees) and shifts (crop pixels) of the aligned crop; the most confident reading of each
    #: stage is the next one's centre (:data:`Stage`); whole-pixel shifts are read at once,
    #: fractional ones resample the crop.
    #: Re-detection by CenterFace misplaces the crop of a refacex face by up to a zoom of 6 %, a turn
    #: of 2-5 deg and a shift of 4.5 crop pixels (90th percentiles over resize x0.5 / x1.5, 10 % crop
    #: and noise; 30 LFW faces), while dct-qim's carriers repeat every 8-16 crop pixels; and a
    #: registration 0.25-0.7 px off still cost 8-36 of its 252 bits (9 of 40 faces, no distortion),
    #: hence the sub-pixel stages, down to an eighth of a pixel and of a degree (after JPEG Q50 a
    #: registration 0.1-0.3 px off cost up to 28 bits more than the mark's own frame: an ad hoc
    #: check of 15 faces).
    sync_stages: tuple[Stage, ...] = (
        (0.04, 2.0, 2, 2, 8),
        (0.02, 1.0, 1, 1, 2),
        (0.01, 0.5, 1, 1, 1),
        (0.0, 0.0, 0, 0.5, 0.5),
        (0.005, 0.25, 1, 0, 0),
        (0.0, 0.0, 0, 0.25, 0.25),
        (0.0025, 0.125, 1, 0, 0),
        (0.0, 0.0, 0, 0.125, 0.125),
    )
    #: The search's first stages, the wide ones; the local search around the re-detection starts
    #: after them (0: the local search is the whole search).
    wide_stages: int = 1
    #: Contrast gains tried after the first stage (coarse), and around the best after the last (fine):
    #: brightness and contrast changes of +-20 % scale the carriers' coefficients as much.
    sync_gains: tuple[tuple[float, ...], tuple[float, ...]] = ((0.8, 0.9, 1.0, 1.1, 1.2), (-0.04, -0.02, 0.0, 0.02, 0.04))
    #: Low-pass falloffs (blur, down-scaling and lossy codecs scale a higher-frequency carrier more:
    #: the watermark's ``carrier_gains``) tried at the search's last stage: coarse, each with
    #: :attr:`sync_falloff_gains`, then around the one taken, with the fine gains.
    sync_falloffs: tuple[tuple[float, ...], tuple[float, ...]] = (
        (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5),
        (-0.02, -0.01, 0.0, 0.01, 0.02),
    )
    #: A falloff is tried at the search's last stage only (the frame is found as before), and taken
    #: only if it reads this much more confidently than the best gain alone: fitted to JPEG's or
    #: WebP's noise, a falloff gained 0-2 % in confidence and moved as many faces' readings away from
    #: the mark as towards it; after a blur it gained 8-20 % and took wrong bits away (30 LFW
    #: originals read in their marks' own frames, an ad hoc script). Measured with ``python
    #: research/reader_fallbacks.py --fallback falloff --host none|refacex --images 100 --rows
    #: jpeg_q50,webp_q80,resize_0.5,blur_1,...`` (the same marked images read with / without):
    #: original faces x0.5 16 / 11, blur 9 / 5, JPEG Q50 70 / 70, WebP 76 / 75, brightness -20 %
    #: 100 / 100, contrast +20 % 97 / 97; refacex-anonymised faces x0.5 53 / 45, blur 42 / 35, Q50
    #: 33 / 33, WebP 36 / 36, unchanged 100 / 100.
    falloff_margin: float = 1.05
    #: Watermarks with ``gains_first`` (carriers that read nothing at a wrong gain: ``dct-qim-low``'s
    #: two lowest, the largest coefficients of a face) have a search's first stage read every coarse
    #: gain at once, if the stage reads at most this many crops x shifts (the local search's first
    #: stage, 225; not the wide one's 2,025).
    gains_first_readings: int = 400
    #: Gains tried with each falloff, relative to the gain found without one (a falloff lowers the
    #: lowest carriers' factor too).
    sync_falloff_gains: tuple[float, ...] = (1.0, 1.05, 1.1)

    #: A face the local search did not open is searched again from the most confident points of a
    #: finer grid around its re-detection (:attr:`beam_grid`), up to this many.
    #: The mark's confidence peak is narrow: after WebP Q80 (10 LFW faces the reader lost, read at
    #: their marks' own frames, an ad hoc script) its mean confidence fell from 0.51-0.60
    #: there to 0.45-0.50 half a crop pixel away, 0.46-0.51 at 1 % in zoom and 0.47-0.52 at half a
    #: degree, while the local search's first stage (steps of 1 px, 2 %, 1 deg) peaked at 0.44-0.51
    #: by chance; so the greedy search took a chance point, and its runners-up were chance points too.
    #: A beam of the first stage's 2nd-5th points opened only 2 more of 60 WebP faces. The bench's
    #: 300 faces after WebP Q80 (fixed seeded keys, an ad hoc A/B, both with
    #: :func:`~refacex_plugin.channel.payload_opener`): of the 13 faces that beam lost, this grid's
    #: top 4 / 8 opened 4 / 5; its cost, ~0.3 s a face without a codeword.
    search_beam: int = 8
    #: The beam's grid around the re-detection (:data:`Stage`'s layout): zooms within +-2 %, turns
    #: within +-1 deg at half the local search's first steps, shifts within +-2 px at half-pixel
    #: steps (four resampled crops a zoom and turn, each read at every whole-pixel shift).
    beam_grid: Stage = (0.01, 0.5, 2, 0.5, 2)
    #: Each beam start is refined from this stage of :attr:`sync_stages` on (the half-pixel stage):
    #: the grid already placed it within a half pixel.
    beam_from_stage: int = 3

    #: The polish's first steps in (scale, turn in degrees, dx, dy in crop pixels, gain,
    #: falloff): the finest of :attr:`sync_stages`, :attr:`sync_gains` and :attr:`sync_falloffs`;
    #: each round halves them.
    polish_steps: tuple[float, ...] = (0.0025, 0.125, 0.125, 0.125, 0.01, 0.01)
    #: Rounds of the polish (each at half the last's steps; 0: the reading is read again where the
    #: stages ended, not moved).
    polish_rounds: int = 3
    #: Moves a polish round makes at most.
    polish_moves: int = 12

    #: Image scales at which a reader re-detects the faces whose search found no codeword, to start a
    #: local search from each; 1.0 stands for the re-detection itself, unsettled: the frame files
    #: marked without :mod:`~refacex_plugin.registration`'s settling carry their marks in
    #: (``test_marks_embedded_in_unsettled_frames_still_open``). For such files these
    #: starts answer CenterFace's misplacement after a resize (after x1.5:
    #: 3.9 % in zoom, 1.7 deg, 2.2 crop px, medians; ``python research/watermark_sync.py --misplacement
    #: --host none --faces 80``): re-detecting at the inverse scale sees the pixels the embedder saw
    #: (40 of 40 faces opened after x1.5 vs 34; ``python research/reader_fallbacks.py
    #: --fallback rescaled --images 40``: x0.67 / 0.8 / 1.25 / 1.5 / 2: 26 / 38 / 40 / 40 / 39 of 40 vs
    #: 25 / 34 / 40 / 37 / 37). Costs unmarked faces a detection and a local search per scale (ad hoc
    #: timing, 12 unmarked LFW images: 248 -> 394 ms a read for the two rescaled ones).
    rescaled_starts: tuple[float, ...] = (1.0, 2 / 3, 1.5)

    #: Blurs a reader undoes, tried in order: gaussian sigmas in pixels of the face's region brought
    #: to :attr:`deblur_scale`. A blur of sigma 1 is best undone at 0.75-1.25, a half-size resize
    #: (the region scaled back up) at 0.5-0.75 (20 LFW faces, an ad hoc script).
    #: No 1.4: over 60 LFW faces read after x0.5 and after blur sigma 1, every face the
    #: fallback opened opened at 0.6 (x0.5) or 1.0 (blur) first, and each sigma costs an unmarked face
    #: a local search and a polish per start (~42 ms).
    deblur_sigmas: tuple[float, ...] = (0.6, 1.0)
    #: Crop pixels per region pixel at which a reader deblurs: a face smaller than that in the image (a
    #: down-scaled one) is scaled up to it first (cubic), the scale of LFW's faces (1.2-2.2, median 1.5).
    deblur_scale: float = 1.5
    #: Crop pixels per image pixel at which a face without a codeword is re-detected for the deblurred
    #: search's further starts, in order. CenterFace's landmarks move with the scale it sees a face
    #: at, and the embedder saw the face at the host's own scale, which a reader does not know.
    #: After a half-size resize (30 LFW faces, an ad hoc script), the re-detection
    #: in the whole image scaled back up x2 (the embedder's scale) lay a median 0.8 % (90th percentile
    #: 2.4 %) in zoom and 0.9 (1.7) crop px from the mark, scaled x3 3.9 % (7.0 %) and 2.1 (5.3) px, in
    #: the half-size image 2.5 % (6.1 %) and 2.4 (4.5) px; the local search and polish open a face from a
    #: start up to ~4 % in zoom, 2 deg in turn or 3 crop px away, not beyond. Same marked images through
    #: the reader (an ad hoc A/B, 60 LFW originals, fixed key), (1.5,) / (1.5, 1.2, 1.9) / these
    #: five: x0.5 47 / 53 / 55 opened, blur sigma 1 56 / 59 / 60; refacex-anonymised hosts (40) x0.5
    #: 37 / - / 39, blur 40 / - / 40, WebP 32 / - / 32.
    deblur_detect_scales: tuple[float, ...] = (1.5, 1.2, 1.9, 1.0, 2.4)
    #: Starts nearer than this to an earlier one (zoom, turn in degrees, shift in crop pixels) are
    #: not searched again: the local search from either ends at the same reading.
    same_start: tuple[float, float, float] = (0.005, 0.25, 0.5)

    #: A face the local search did not open is searched by these (names in
    #: :data:`~refacex_plugin.channel.fallbacks.FALLBACKS`), in order, within its :attr:`read_budget`.
    #: Likely and cheap first: deblurring from the reading's own frame opens most faces a resize or a
    #: blur weakened, in its first readings; re-detections at other scales (an upscale; marks
    #: embedded in unsettled frames) and the clipping estimate (brightening; no reading at all where
    #: nothing clipped) take a reading or three; the beam opens most of what JPEG or WebP moved off
    #: the local search's grid (:attr:`search_beam`), from its best starts first; the wide search and
    #: the deblurring's further starts (a detection each) come last. Measured on 16 marked LFW images
    #: a row (pixelate hosts; resize x0.5, blur sigma 1, WebP Q80), every reader fallback run to its
    #: end: of the faces the fallbacks opened, the deblurring opened them in its first 3 readings,
    #: the beam in its first 9, the wide search 1.
    fallbacks: tuple[str, ...] = ("deblurred", "rescaled", "unclipped", "beam", "wide", "deblurred_redetected")

    #: Readings a reader tries on one face at most (:class:`~refacex_plugin.channel.ReadingBudget`):
    #: the local search and its polish, then the :attr:`fallbacks` in order until one opens the face
    #: or the budget is spent. A count, not a clock, so the same image reads the same way on any
    #: machine and under any load. Without it every fallback runs to its end on a face with no mark
    #: (an unmarked face, or one a distortion erased): ~45 readings, 5-8 s a face on this CPU; and no
    #: early sign tells such a face from a marked one a distortion weakened (the local reading's
    #: confidence, the confidence of its ones and zeros apart, its peak over the gains: each
    #: overlapped between unmarked faces and marked ones the fallbacks opened, 25-40 LFW faces a row,
    #: pixelate hosts). 16 readings: the local search and its polish, the deblurring from the
    #: reading's frame (4), three rescaled starts, the clipping estimate where something clipped, and
    #: the beam's best three starts.
    read_budget: int = 16
    #: Readings a face gets in all once another face of the same image has opened (checked between
    #: fallbacks): its local search and polish, no fallback. The fallbacks undo what a distortion did
    #: to the whole image, and a face that opened shows the reader copes with it here; a face left
    #: beside it is mostly one whose mark did not take (the embedder's ``embedded-unverified``) or a
    #: candidate that carries none (the reader detects with a lower threshold than the anonymiser).
    #: On 20 LFW images marked by the default method (``refacex``, vault references), read
    #: unchanged, every face that did not open sat beside one that did, and the reader without a
    #: budget (up to ~48 readings a face) opened none of them either: 23 of 24 embedded faces both
    #: ways, 1.98 s an image then.
    neighbour_budget: int = 2
    #: Readings a face gets with each watermark of :data:`~refacex_plugin.watermark.EARLIER_DEFAULTS`
    #: (:meth:`~refacex_plugin.reader.FaceReader.read_payloads`) where the default found no mark: the local search and its polish.
    #: Every face without a payload (an unmarked one, or one whose mark a distortion erased) pays this
    #: on every read, so it stays small; files marked with those watermarks open unchanged or
    #: re-encoded at the local search.
    earlier_read_budget: int = 2
    #: Whether a reader holding keys ends a face's search at a reading that opens under them, not
    #: only at a hard codeword (:func:`~refacex_plugin.channel.payload_opener`): a face the search
    #: never reads a codeword from otherwise gets its most confident reading, which after WebP Q80 or
    #: a half-size resize is often a chance point, while soft decoding opens readings with 11-19
    #: wrong bits.
    open_while_searching: bool = True

    @property
    def search_reach(self) -> int:
        """How far the search's shifts can move a reading, summed over :attr:`sync_stages` (crop
        pixels), plus bilinear sampling's pixel: a searching reader samples its watermark's
        ``carrier_window`` widened by this."""
        return int(math.ceil(sum(stage[4] for stage in self.sync_stages))) + 1

    @property
    def local_stages(self) -> tuple[Stage, ...]:
        """The local search's stages: :attr:`sync_stages` after the wide ones."""
        return self.sync_stages[self.wide_stages :]


@dataclass(frozen=True)
class EmbedConfig:
    """How the embedder places each face's mark and checks it (:mod:`~refacex_plugin.channel.embed`)."""

    #: How far (zoom, turn in degrees, shift in crop pixels) a marked face's re-detection may lie from
    #: the frame its mark was embedded in for the embedder to count it as found: within the search's
    #: first grid step, leaving its range (+-8 % / 4 deg / 8 px, then finer) room for a distortion's own
    #: misplacement. Measured with ``research/embed_rounds.py --images 150 --seed 11 --host
    #: pixelate|refacex`` (185 faces, reader at 0.2, one core each; opened unchanged / after JPEG Q75;
    #: embedding time; faces called embedded that did not open unchanged): pixelate in one round 73.5 /
    #: 57.8 %, 39 ms, 20 of 156 wrong; this start, three rounds 81.6 / 64.3 %, 53 ms, 0 of 139; a looser
    #: (6 %, 3 deg, 6 px) 81.6 / 64.9 %, 48 ms, 5 of 153. refacex 85.4 / 76.8 %, 37 ms, 2 of 160; 85.9 /
    #: 77.3 %, 45 ms, 0 of 159; the looser start 85.9 / 77.3 %, 39 ms, 0 of 159.
    search_start: tuple[float, float, float] = (0.04, 2.0, 4.0)
    #: Embedding rounds at most (each embeds in the last round's re-detected frames; the best is
    #: kept): see :func:`~refacex_plugin.channel.embed_in_image` for what each round buys.
    max_rounds: int = 3
    #: Rounds of settling the embedder's check gives a face from its settled frame: settling
    #: converges to nearly one point from starts pixels apart (after a 10 % crop, re-detections
    #: 2.9 px apart at the median settle within 0.6 px; :mod:`~refacex_plugin.registration`), so a
    #: mark that moved the face's settled landmarks shows within two rounds. Saves an embedded face
    #: ~6 detections of the settling crop.
    check_rounds: int = 2
    #: The reader the embedder checks its marks for: a face too small for it to read
    #: (:attr:`ReaderConfig.min_read_eyes`) is not called ``embedded``.
    reader: ReaderConfig = ReaderConfig()
