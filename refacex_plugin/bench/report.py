"""Markdown report and PNG plots from a benchmark result dictionary."""

from __future__ import annotations

from pathlib import Path


def _f(v, fmt="{:.3f}", none="–"):
    if v is None:
        return none
    if v == 0:
        v = 0.0  # no "-0.000"
    if isinstance(v, float) and v != v:
        return "nan"
    return fmt.format(v)


def _pct(v):
    return _f(None if v is None else 100 * v, "{:.1f} %")


def _pct_ci(v, n):
    """A rate with its 95 % Wilson interval over ``n`` trials: ``7.3 % (4.9-10.9)``."""
    if v is None or not n:
        return _pct(v)
    from .metrics import wilson_interval

    lo, hi = wilson_interval(v, int(n))
    return f"{_pct(v)} ({100 * lo:.1f}–{100 * hi:.1f})"


def markdown(res: dict) -> str:
    d = res["data"]
    lines = [
        f"# refacex benchmark ({res['mode']} mode)",
        "",
        f"- command: `{res.get('command') or 'refacex bench'}`",
        f"- refacex {res['refacex_version']}, commit `{res.get('git_commit') or 'unknown'}`, seed {res['seed']}, device {res['device']}, "
        f"created {res['created']}, {res.get('elapsed_s', '?')} s",
        f"- data: `{d['path']}`: gallery {d['gallery_images']} images of {d['gallery_identities']} identities; "
        f"{d['probe_images']} probe images of {d['probe_identities']} identities "
        f"(up to {d['probes_per_person']} per identity); "
        f"{d.get('images_without_central_face', 0)} images without a detected central face left out",
        f"- detector: {res['detector']}",
        "",
    ]
    methods = res["methods"]
    if res.get("recognizers"):
        lines += [
            "## Recognisers (calibrated on original images)",
            "",
            "| recogniser | metric | threshold at FAR | observed FAR | impostor pairs | TAR on originals | pairs.txt accuracy |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, c in res["recognizers"].items():
            pt = c.get("pairs_txt") or {}
            lines.append(
                f"| {name} | {c['metric']} | {abs(c['threshold']) if c['metric'] == 'euclidean' else c['threshold']:.4f} (FAR {c['far']:.1%}) | {_pct(c['observed_far'])} | {c['impostor_pairs']:,} | "
                f"{_pct(c['tar'])} ({c['genuine_pairs']} pairs) | {_pct(pt.get('accuracy'))} ({pt.get('pairs', 0)} pairs) |"
            )
        lines.append("")
    recs = list(res.get("recognizers", {}))
    if recs and any("privacy" in m for m in methods.values()):
        lines += [
            "## Privacy (anonymised vs original; lower is more private)",
            "",
            "Match rate: share of (original, anonymised) pairs of the same face that the recogniser still "
            "calls the same person at its FAR threshold. Rank-1/5: anonymised probe against a gallery of one "
            "*different* original image of every identity. The anonymised face is embedded where the original "
            "face was. `none` is the un-anonymised reference.",
            "",
        ]

        def sim_name(r):
            return "mean distance" if res["recognizers"][r]["metric"] == "euclidean" else "mean cosine"

        head = "| method | " + " | ".join(f"{r} match | {r} rank-1 | {r} rank-5 | {r} {sim_name(r)}" for r in recs) + " |"
        lines += [head, "| --- " * (1 + 4 * len(recs)) + "|"]
        rows = [("none", res.get("reference", {}))] + list(methods.items())
        for m, e in rows:
            p = e.get("privacy")
            if not p:
                continue
            cells = []
            for r in recs:
                if r not in p:  # a merged report whose runs judged with different recognisers
                    cells += ["–"] * 4
                    continue
                q = p[r]
                sim = -q["mean_similarity"] if res["recognizers"][r]["metric"] == "euclidean" else q["mean_similarity"]
                cells += [_pct(q["match_rate"]), _pct(q["rank1"]), _pct(q["rank5"]), _f(sim)]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        donors = [
            (m, e["privacy"])
            for m, e in methods.items()
            if e.get("privacy") and any(q.get("donor_match_rate") is not None for q in e["privacy"].values())
        ]
        if donors:
            lines += [
                "Donor leakage: share of anonymised faces that the recogniser matches (same threshold) to any of the "
                "people their donors were built from.",
                "",
                "| method | " + " | ".join(f"{r} donor match" for r in recs) + " |",
                "| --- " * (1 + len(recs)) + "|",
            ]
            lines += [f"| {m} | " + " | ".join(_pct(p[r].get("donor_match_rate")) for r in recs) + " |" for m, p in donors]
            lines.append("")
    if res.get("naturalness"):
        lines += [
            "## Naturalness (a classifier that tells anonymised faces from real ones)",
            "",
            "A small CNN is trained per method and crop size on aligned face crops (JPEG Q90 on both sides) of one set "
            "of people and tested on people it never saw: 0.5 is indistinguishable from real faces, 1.0 always caught. "
            "Both sizes are cut from the same faces and trained with the same seed and steps; the 128-px network has "
            "one more strided block (– : not measured, runs before the 128-px classifier).",
            "",
            "| method | test accuracy 64 px | test accuracy 128 px | train / test faces | steps |",
            "| --- | --- | --- | --- | --- |",
        ]
        for m, n in res["naturalness"].items():
            lines.append(
                f"| {m} | {n['accuracy']:.3f} | {_f(n.get('accuracy_128'))} | {n['train_faces']} / {n['test_faces']} | {n['steps']} |"
            )
        lines.append("")
    if any("utility" in m for m in methods.values()):
        lines += [
            "## Utility (anonymised vs original)",
            "",
            "| method | detection retained | 68-pt NME | 5-pt NME (detector) | head-pose diff (°) | yaw / pitch / roll (°) | background PSNR (dB) | background SSIM | face PSNR (dB) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m, e in methods.items():
            u = e.get("utility")
            if not u:
                continue
            ypr = " / ".join(f"{v:.1f}" for v in u["yaw_pitch_roll_diff_deg"])
            lines.append(
                f"| {m} | {_pct(u['detection_retention'])} | {_f(u['landmark_nme'])} | {_f(u.get('detector_nme5'))} | "
                f"{_f(u['head_pose_diff_deg'], '{:.2f}')} | {ypr} | "
                f"{_f(u['background_psnr_db'], '{:.1f}')} | {_f(u['background_ssim'], '{:.4f}')} | {_f(u['face_psnr_db'], '{:.1f}')} |"
            )
        lines += [
            "",
            "Background PSNR is capped at 100 dB (identical pixels). Landmarks: dlib's 68-point predictor on the "
            "original face box, NME normalised by the outer-eye-corner distance; 5-point NME: the detector's "
            "(CenterFace) eyes, nose tip and mouth corners found again on the anonymised face, normalised by the "
            "original's eye-centre distance.",
            "",
        ]
    lines += attributes_markdown(res)
    lines += robustness_markdown(res.get("watermarks") or {})
    if any("recovery" in m for m in methods.values()):
        rec_names = list(
            next((m["recovery"]["none"]["identity"] for m in methods.values() if m.get("recovery", {}).get("available")), {}) or []
        )
        lines += [
            "## Recovery (with the key, through the real channel)",
            "",
            "Anonymised with a key (each face's recovery code sealed and watermarked in), optionally re-encoded, then "
            "re-detected, payload read and opened, and reconstructed. *code_direct*: the recovery network given the "
            "true code without the watermark channel; *random_code*: the public recovery network with random codes "
            "instead (no key).",
            "",
            "| method | condition | payload opened | "
            + " | ".join(f"identity match {n}" for n in rec_names)
            + " | face PSNR (dB) | image SSIM |",
            "| --- " * (5 + len(rec_names)) + "|",
        ]
        for m, e in methods.items():
            s = e.get("recovery")
            if s is None:
                continue
            if not s.get("available"):
                lines.append(f"| {m} | not available: {s['reason']} |" + " |" * (3 + len(rec_names)))
                continue
            for row in ("none", "jpeg_q75", "code_direct", "random_code"):
                r = s[row]
                lines.append(
                    f"| {m} | {row} | {_pct(r.get('payload_restored_rate'))} | "
                    + " | ".join(_pct(r["identity"][n]["match_rate"]) for n in rec_names)
                    + f" | {_f(r.get('face_psnr_db'), '{:.2f}')} | {_f(r.get('image_ssim'), '{:.4f}')} |"
                )
        lines.append("")
    if res.get("attacks"):
        lines += attacks_markdown(res["attacks"])
    if any("speed" in m for m in methods.values()):
        lines += [
            "## Speed (this machine, decoded images in memory)",
            "",
            "*anonymise*: detect, align, anonymise, paste back. *+ embed*: the full pipeline with a key (anonymise, seal "
            "each face's code, embed it in the frame a reader will find and read it back); both timed against blur's *anonymise*. "
            "*extract*: the reader on the marked images (detect, search for each candidate face's mark, open it with the key)"
            f"{_extract_sample(methods)}. "
            "*+ embed vs blur + embed*: both full pipelines. "
            f"Each other figure is the best of {_rounds(methods)} timing rounds.",
            "",
            "| method | anonymise img/s | faces/s | + embed img/s | anonymise op faces/s | detect img/s | extract img/s (faces/s) | peak RSS (MB) | time vs blur | + embed vs blur | + embed vs blur + embed | RSS vs blur |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m, e in methods.items():
            s = e.get("speed")
            if not s:
                continue
            if "error" in s:
                lines.append(f"| {m} | error: {s['error']} | | | | | | | | | | |")
                continue
            lines.append(
                f"| {m}{' (baseline)' if s.get('baseline_only') else ''} | {s['pipeline_images_per_s']:.1f} | {s['pipeline_faces_per_s']:.1f} | "
                f"{_f(s.get('full_images_per_s'), '{:.1f}')} | "
                f"{_f(s['anonymise_faces_per_s'], '{:.1f}')} | {s['detect_images_per_s']:.1f} | "
                f"{_f(s.get('extract_images_per_s'), '{:.1f}')} ({_f(s.get('extract_faces_per_s'), '{:.1f}')}) | {s['peak_rss_mb']:.0f} | "
                f"{_f(s.get('time_ratio_vs_blur'), '{:.2f}×')} | {_f(s.get('full_time_ratio_vs_blur'), '{:.2f}×')} | "
                f"{_f(s.get('full_vs_full_ratio_vs_blur'), '{:.2f}×')} | {_f(s.get('rss_ratio_vs_blur'), '{:.2f}×')} |"
            )
        lines.append("")
        par = {m: e["speed"]["parallel"] for m, e in methods.items() if (e.get("speed") or {}).get("parallel")}
        if par:
            n = next(iter(par.values()))["workers"]
            lines += [
                f"With {n} images at a time (threads sharing one pipeline, as `refacex anonymise --workers {n}` runs a folder; "
                "each network call gets its share of the cores), against blur timed the same way:",
                "",
                "| method | anonymise img/s | + embed img/s | time vs blur | + embed vs blur |",
                "| --- | --- | --- | --- | --- |",
            ]
            for m, q in par.items():
                lines.append(
                    f"| {m} | {q['pipeline_images_per_s']:.1f} | {q['full_images_per_s']:.1f} | "
                    f"{_f(q.get('time_ratio_vs_blur'), '{:.2f}×')} | {_f(q.get('full_time_ratio_vs_blur'), '{:.2f}×')} |"
                )
            lines.append("")
        fo_speed = methods.get("blur", {}).get("speed", {}).get("fiftyone")
        if fo_speed and "error" not in fo_speed:
            lines += [
                f"FiftyOne operator API vs the CLI's file runner (blur, same {fo_speed['images']} images, as many at a time, files written, "
                f"real database): {fo_speed['fiftyone_images_per_s']:.1f} vs {fo_speed['core_images_per_s']:.1f} img/s "
                f"= {fo_speed['fiftyone_vs_core']:.2f}× the core's throughput.",
                "",
            ]
    return "\n".join(lines)


def attributes_markdown(res: dict) -> list[str]:
    """The attributes section (:mod:`.attributes`): per method, apparent gender, age band and skin
    tone kept, overall and per group of the original faces."""
    shared = res.get("attributes")
    rows = {m: e["attributes"] for m, e in res["methods"].items() if e.get("attributes")}
    if not shared or not rows:
        return []
    from .attributes import LIGHTNESS_MOVED

    sizes = shared.get("original_groups", {})
    lines = [
        "## Attributes kept (apparent gender, age band, skin tone)",
        "",
        f"{shared['faces']} faces: the central face of a seeded sample of {shared.get('images_sampled', '?')} images "
        f"({shared.get('images_without_central_face', 0)} without one left out). Each is cut at the original's five "
        "detector points from the original and from the method's output (the same aligned 256-px crop, so the same "
        "face), its 68 points found on each crop separately, and measured on both: apparent gender and age by dlib's "
        "networks (Cydral), skin tone as the median CIE L* of the bare cheek, nose and forehead skin. Groups are the "
        "*original* face's: women / men, age bands, lighter (L* ≥ 50) / darker skin; "
        + ", ".join(f"{g} {k}" for g, k in sizes.items() if g != "all")
        + (
            f"; {shared['original_skin_unmeasured']} without measurable skin are in neither skin group"
            if shared.get("original_skin_unmeasured")
            else ""
        )
        + ".",
        "",
        "**Self-judged figures.** The same estimator picks refacex's donors by apparent gender, age and skin tone, "
        "so refacex's figures here are an upper bound (it was steered to satisfy this very judge); an independent "
        "estimator, or people, may disagree. The reference table shows the estimator's own noise: each original "
        "against its own mirror image, which changes nothing a person would see.",
        "",
        "*gender kept*, *age band kept*: share of the group's faces (95 % Wilson interval) whose anonymised face reads "
        "the same; a fallback face (the method's mosaic instead of its result) counts as not kept. *age error*: mean "
        f"absolute difference of the estimated ages. *L\\* moved*: share of faces whose skin L\\* changed by more than "
        f"{LIGHTNESS_MOVED:.0f}; *L\\* shift*: mean signed change (anonymised minus original; negative = darker). "
        "Age error and both L\\* columns leave fallback faces out (and faces without measurable skin: *L\\* faces*).",
        "",
    ]

    def table(groups: dict) -> list[str]:
        out = [
            "| group | faces | gender kept | age band kept | age error (years) | L* faces | L* moved > "
            f"{LIGHTNESS_MOVED:.0f} | L* shift | fallback faces |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for g, q in groups.items():
            n = q["faces"]
            out.append(
                f"| {g} | {n} | {_pct_ci(q['gender_kept'], n)} | {_pct_ci(q['age_band_kept'], n)} | "
                f"{_f(q['age_error_years'], '{:.1f}')} | {q['lightness_faces']} | {_pct(q['lightness_moved'])} | "
                f"{_f(q['lightness_shift'], '{:+.1f}')} | {q['fallback_faces']} |"
            )
        return out

    ref = shared.get("reference")
    if ref:
        lines += [f"### Reference: {ref['what']}", "", *table(ref["groups"]), ""]
    for m, a in rows.items():
        fb = a["fallback_faces"]
        note = " (counted as not kept; left out of the age error and L* columns)" if fb else ""
        lines += [f"### {m}", "", f"Fallback faces: {fb} of {a['faces']}{note}.", "", *table(a["groups"]), ""]
    return lines


def _extract_sample(methods: dict) -> str:
    """How many marked images the reader was timed on (one round), as the speed runs report it."""
    counts = sorted({e["speed"]["extract_images"] for e in methods.values() if "extract_images" in (e.get("speed") or {})})
    return f", timed once on the first {'/'.join(map(str, counts))} marked images" if counts else ""


def _rounds(methods: dict) -> str:
    """How many timing rounds the speed figures are the best of (runs before rounds: 1)."""
    rounds = {(e.get("speed") or {}).get("rounds", 1) for e in methods.values() if e.get("speed") and "error" not in e["speed"]}
    return "/".join(str(r) for r in sorted(rounds)) or "1"


def robustness_markdown(watermarks: dict) -> list[str]:
    """The payload-robustness section (bench/robustness.py), one column group per watermark."""
    wms = {n: w for n, w in watermarks.items() if w.get("available")}
    if not wms:
        return []
    lines: list[str] = []
    names = list(wms)
    first = next(iter(wms.values()))
    what = {
        "vault-ref": "vault reference (payload version 3, BCH t = 21)",
        "recovery-code": "recovery code (payload version 2, BCH t = 10)",
    }.get(first.get("payload", "recovery-code"))
    lines += [
        "## Payload robustness",
        "",
        f"Each face carries a fresh {first['code_bits']}-bit {what} sealed with a random key "
        f"({first['channel_bits']} channel bits after BCH). Exact decode: the code comes back "
        "authenticated and identical after the distortion, re-detection and re-alignment; the payload is bound to "
        "its face, so the reader must also recompute the face's hash (binding misses: reads the channel delivered "
        "that the binding lost). Hosts: " + ", ".join(f"{n}: {w['host']} ({w['faces']} faces)" for n, w in wms.items()) + ".",
        "",
        "| distortion | " + " | ".join(f"{n} exact decode | {n} bit accuracy | {n} binding misses" for n in names) + " |",
        "| --- " * (1 + 3 * len(names)) + "|",
    ]
    for k in next(iter(wms.values()))["exact_decode_rate"]:
        lines.append(
            f"| {k} | "
            + " | ".join(
                f"{_pct(wms[n]['exact_decode_rate'][k])} | {_pct(wms[n]['bit_accuracy'][k])} | "
                f"{wms[n].get('binding_misses', {}).get(k, '–')}"
                for n in names
            )
            + " |"
        )
    lines.append("| face-region PSNR (dB) | " + " | ".join(f"{_f(wms[n]['face_psnr_db'], '{:.1f}')} | | " for n in names) + " |")
    lines.append("| whole-image PSNR (dB) | " + " | ".join(f"{_f(wms[n]['image_psnr_db'], '{:.1f}')} | | " for n in names) + " |")
    lines.append(
        "| false detections | "
        + " | ".join(
            f"{wms[n].get('false_detect_authenticated', '–')} of {wms[n].get('false_detect_faces', '–')} faces | | " for n in names
        )
        + " |"
    )
    lines.append("")
    for n, w in wms.items():
        ecc = w.get("ecc_comparison")
        if not ecc:
            continue
        short = all("bch_t21" in v for v in ecc.values())  # runs before payload version 3 lack it
        soft = short and all("bch_t21_soft" in v for v in ecc.values())  # and JSON older than soft decoding lacks that
        lines += [
            f"Error correction on {n}'s real channel errors (share of reads each code corrects by hard decision; "
            "BCH t = 10 over 252 bits vs Reed-Solomon with 9 parity bytes over 248 bits"
            + ("; and the vault reference's BCH t = 21 (payload version 3: a 112-bit message)" if short else "")
            + (
                ", also soft-decoded as a reader does (Chase, then ordered statistics; the exact decode rates above are"
                f" the {'vault reference' if w.get('payload') == 'vault-ref' else 'recovery code'}'s, soft-decoded)"
                if soft
                else ""
            )
            + "):",
            "",
            "| distortion | mean bit errors | "
            + ("median | " if short else "")
            + "BCH | RS |"
            + (" BCH t = 21 (vault ref) |" if short else "")
            + (" vault ref, soft |" if soft else ""),
            "| --- | --- | --- | --- |" + (" --- | --- |" if short else "") + (" --- |" if soft else ""),
        ]
        lines += [
            f"| {k} | {v['mean_bit_errors']:.1f} | "
            + (f"{v['median_bit_errors']:.0f} | " if short else "")
            + f"{_pct(v['bch_t10'])} | {_pct(v['rs_nsym9'])} |"
            + (f" {_pct(v['bch_t21'])} |" if short else "")
            + (f" {_pct(v['bch_t21_soft'])} |" if soft else "")
            for k, v in ecc.items()
        ]
        lines.append("")
    return lines


def attacks_markdown(a: dict) -> list[str]:
    """The attack section (:func:`.attacks.measure_attacks`' result): payload tampering and
    transplant (:mod:`.payload_attacks`), keyless recovery, learned inversion, adversarial pull and
    donor linkage (:mod:`.identity_attacks`)."""
    lines = [
        "## Attacks (public code and weights, no key)",
        "",
        f"Attacked faces: {a.get('evaluated_faces')} probes of people the attacker's networks never trained on "
        '(their "val" identities; training pairs come from the "train" identities). Identity rates (match, rank-1) carry '
        "their 95 % Wilson interval over the faces attacked.",
        "",
        "### Payload tampering",
        "",
        "| case | trials | refused | opened intact | opened into something else |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case, r in a["payload"].items():
        lines.append(f"| {case} | {r['trials']} | {r['refused']} | {r['opened_intact']} | {r['opened_wrong']} |")
    t = a.get("transplant")
    if t:
        lines += [
            "",
            f"Transplant ({t['watermark']} watermark): a marked face's channel bits read with the public decoder and "
            f"embedded with the public embedder into another person's anonymised image: {t['opened_in_other_image']} of "
            f"{t['pairs']} moved payloads open under the victim's key there, {t['refused_in_other_image']} are refused "
            "(the tag covers a hash of the face the payload was sealed for). Control: the same bits re-embedded the same "
            f"way into their own image open for {t['control_opened_in_own_image']} of {t['pairs']}.",
        ]
    names = None
    for method, e in a.get("methods", {}).items():
        for section in ("keyless_recovery", "inversion", "adversarial_pull"):
            rows = e.get(section)
            if not rows:
                continue
            first = next((v for v in rows.values() if isinstance(v, dict) and "identity" in v), None)
            if first is None:
                continue
            names = list(first["identity"])
            ranked = [n for n in names if "rank1_originals" in first["identity"][n]]
            title = {
                "keyless_recovery": "Keyless recovery",
                "inversion": "Learned inversion",
                "adversarial_pull": f"Adversarial pull (PGD on the dlib model, {rows.get('faces')} faces with a gallery photo)",
            }[section]
            lines += ["", f"### {title}: {method}", ""]
            if ranked:
                searched = first["identity"][ranked[0]]["originals_searched"]
                lines += [
                    f"*match*: the face matches its own original at the recogniser's threshold; *rank-1*: the most similar "
                    f"of all {searched:,} original photos (its own included) shows the same person.",
                    "",
                ]
            lines += [
                "| attack | "
                + " | ".join(f"match {n}" for n in names)
                + "".join(f" | rank-1 {n}" for n in ranked)
                + " | "
                + " | ".join(f"mean sim. {n}" for n in names)
                + " | notes |",
                "| --- " * (2 + 2 * len(names) + len(ranked)) + "|",
            ]
            for name, r in rows.items():
                if not isinstance(r, dict) or "identity" not in r:
                    continue
                note = ""
                if section == "inversion" and "steps" in r:
                    loss = r.get("identity_loss", "dlib")
                    note = (
                        f"width {r['width']}, "
                        + ("pixel loss only" if loss == "none" else f"identity loss through {loss}")
                        + f", {r['steps']} steps on {r['train_faces']} faces, {r['train_s']:.0f} s"
                    )
                if section == "adversarial_pull":
                    note = f"L-inf {r['linf'] * 255:.0f}/255, crop PSNR {r['crop_psnr_db']:.1f} dB"
                faces = rows.get("faces") if section == "adversarial_pull" else a.get("evaluated_faces")
                lines.append(
                    f"| {name} | "
                    + " | ".join(_pct_ci(r["identity"][n]["match_rate"], faces) for n in names)
                    + "".join(f" | {_pct_ci(r['identity'][n].get('rank1_originals'), faces)}" for n in ranked)
                    + " | "
                    + " | ".join(_f(r["identity"][n]["mean_similarity"]) for n in names)
                    + f" | {note} |"
                )
    d = a.get("donor_linkage")
    if d:
        lines += [
            "",
            "### Consistent-donor linkage",
            "",
            f"{d['people']} people with two photos, bank of {d['bank_size']} donors: "
            f"same donor for their other photo under the same key {_pct(d['same_donor_same_key_other_photo'])}; "
            f"same donor under two different keys {_pct(d['same_donor_across_keys'])} (chance {_pct(d['chance'])}).",
        ]
    lines.append("")
    return lines


def plots(res: dict, out_dir: Path) -> list[Path]:
    """Privacy-vs-utility scatter (and robustness bars once a watermark exists). Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    methods = {m: e for m, e in res["methods"].items() if "privacy" in e and "utility" in e}
    if methods:
        recs = list(res["recognizers"])
        fig, axes = plt.subplots(1, len(recs), figsize=(5.2 * len(recs), 4.2), squeeze=False)
        for ax, r in zip(axes[0], recs):
            for m, e in methods.items():
                x, y = 100 * e["privacy"][r]["match_rate"], e["utility"]["landmark_nme"]
                ax.scatter(x, y, s=60)
                ax.annotate(m, (x, y), textcoords="offset points", xytext=(6, 4))
            ax.set_xlabel(f"match rate vs original, {r} (%)  ← more private")
            ax.set_ylabel("landmark NME  ← more useful")
            ax.set_xlim(left=-2)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.suptitle(f"Privacy vs utility ({res['mode']} mode, {res['data']['probe_images']} probes)")
        fig.tight_layout()
        path = out_dir / "privacy_vs_utility.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    rob = {n: w for n, w in (res.get("watermarks") or {}).items() if w.get("available")}
    if rob:
        fig, ax = plt.subplots(figsize=(10, 4))
        for k, (m, r) in enumerate(rob.items()):
            names = list(r["exact_decode_rate"])
            ax.bar(
                [i + 0.8 * k / len(rob) for i in range(len(names))],
                [100 * r["exact_decode_rate"][n] for n in names],
                width=0.8 / len(rob),
                label=m,
            )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel("exact decode (%)")
        ax.set_ylim(0, 105)
        ax.set_title("Payload exact-decode rate under distortions")
        ax.legend()
        fig.tight_layout()
        path = out_dir / "robustness.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    """Re-render a report and plots from a saved JSON result."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("json", type=Path)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--plots", type=Path)
    args = ap.parse_args()
    res = json.loads(args.json.read_text())
    text = markdown(res)
    if args.report:
        args.report.write_text(text + "\n")
    if args.plots:
        plots(res, args.plots)
    print(text)


if __name__ == "__main__":
    main()
