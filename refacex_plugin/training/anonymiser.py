"""Train the refacex anonymiser with detached recovery: ``refacex train anonymiser --config cpu``.

One step, on a batch of aligned training faces ``x`` (``RES`` px) and random synthetic donors ``d``:

* ``y = G(x, d)`` inside the face mask, drawn from ``x``'s blurred view (``limited_view``) alone;
* privacy: the identity model (dlib's ResNet, PyTorch port), after random distortions of ``y``
  (expectation over transformations, so the change survives re-encoding and is not a brittle
  adversarial pattern), must put ``y`` at least ``away_margin`` from ``x`` and close to ``d``;
* utility: ``y`` keeps ``x``'s low frequencies (pose, expression, lighting, skin tone) and, weakly,
  its pixels;
* naturalness: a PatchGAN discriminator (hinge loss) tells ``y`` from real faces (without it,
  the identity loss alone makes adversarial stripes: measured in the first CPU run);
* recovery: ``E(x)`` gives the K-bit code (straight-through sign), and ``R`` reconstructs ``x``
  from a **detached** (stop-gradient), distorted copy of ``y`` and the code, so recovery never
  rewards ``G`` for keeping identity. ``detach=False`` is the ablation;
* keyless privacy: ``R`` run on ``y`` with a *random* code stands in for anyone holding our
  public weights but not the key; ``G`` (only ``G``) is pushed until that output, too, is at least
  ``away_margin`` from ``x``'s identity - so identity must travel in the code, not in ``y``;
* code gate: ``R`` given a code that is not the face's (random, all-zero or all-one) must return
  the detached anonymised face unchanged, so our public ``R`` adds nothing without the key
  (without this term ``refacex bench attacks`` measured R adding identity with such codes).

``recovery_only`` fine-tunes ``R`` alone (``G`` and ``E`` frozen: the shipped anonymisation and
codes do not change), e.g. ``refacex train anonymiser --init zoo --recovery-only``.

Seeded, resumable (checkpoint every ``ckpt_every`` steps), logs JSON lines and a sample grid
(originals / what G sees / anonymised / recovered / recovered from a random code).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..baselines import gaussian_blur
from ..generator.donors import DonorBank
from ..generator.networks import RES, VIEW_BLUR, CodeEncoder, Generator, PatchDiscriminator, RecoveryNet, binarise, blend, limited_view
from ..geometry import AlignConfig, face_mask
from ..identity import IdentityModel
from ..payload import CODE_BITS
from .augment import random_distortion
from .common import Budget, JsonLog, base_parser, check_init_width, load_checkpoint, resolve_init, save_checkpoint, save_grid
from .data import prepare_crops

#: dlib distance at FAR 0.1% on LFW (the full benchmark's threshold): below it, "same person".
MATCH_DISTANCE = 0.544


@dataclass
class AnonymiserTrainConfig:
    steps: int = 3000
    batch: int = 8
    lr: float = 5e-4
    width: int = 32
    code_bits: int = CODE_BITS
    train_images: int = 4000
    val_images: int = 200
    detach: bool = True  # stop-gradient between G and R; False is the ablation
    away_margin: float = 0.8
    w_away: float = 1.0
    w_donor: float = 0.5
    w_low: float = 6.0
    view_blur: float = VIEW_BLUR  # G's view: blur_faces at this strength (sigma 19.2 px at RES for 3.0)
    # Low-pass consistency at sigma 6 px, finer than G's view (12.8-19.2 px): G cannot know that detail,
    # so the loss pulls it toward a plausible average face. At 12 px nothing
    # held the mid frequencies and G drew horizontal stripes by step 300 (face PSNR 17 dB).
    low_sigma: float = 6.0
    w_pix: float = 0.2
    w_rec: float = 2.0
    w_rec_id: float = 1.0
    w_keyless: float = 0.0  # G sees only the blurred face and R has the code gate: off by default
    w_gate: float = 1.0
    recovery_only: bool = False
    w_adv: float = 0.5
    lr_d: float = 2e-4
    eot_level: float = 0.5
    rec_distort_level: float = 0.6
    donors: int = 1024
    log_every: int = 50
    ckpt_every: int = 200
    seed: int = 0


CONFIGS = {
    "tiny": AnonymiserTrainConfig(steps=6, batch=2, width=8, train_images=16, val_images=8, donors=32, log_every=3, ckpt_every=3),
    # 1.37 s/step on this 2-core CPU with the discriminator (width 16, batch 8): 2,200 steps in
    # 3,016 s with the sigma-5 % view and 3,025 s with the sigma-10 % view; 1.48 s/step with the
    # sigma-15 % view (1,800 steps in 2,663 s).
    # The first run (w_away 2, margin 0.9, w_adv 0.1) drew rainbow adversarial textures on eyes and
    # mouth by step 100 (face PSNR 16 dB): the weights below balance it toward naturalness.
    "cpu": AnonymiserTrainConfig(steps=2200, width=16),
    "gpu": AnonymiserTrainConfig(
        steps=60000, batch=32, width=64, train_images=9000, val_images=600, lr=3e-4, log_every=500, ckpt_every=2000
    ),
    # A lent accelerator's few minutes (scripts/device_train.sh): the shipped width, so it continues
    # the zoo's weights (--init zoo), a larger batch, and as many steps as --minutes allows.
    "device": AnonymiserTrainConfig(steps=100000, batch=32, width=16, lr=2e-4, val_images=64, log_every=250, ckpt_every=1000),
}


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() * mask).sum() / (mask.sum() * a.shape[1]).clamp_min(1.0)


class Models(torch.nn.Module):
    def __init__(self, width: int, code_bits: int, view_blur: float = VIEW_BLUR):
        super().__init__()
        self.G = Generator(width, view_blur)
        self.E = CodeEncoder(code_bits, width)
        self.R = RecoveryNet(code_bits, width)


class _frozen:
    """Context: the module's parameters take no gradient inside (inputs still do)."""

    def __init__(self, module: torch.nn.Module):
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


def step_losses(m: Models, idm: IdentityModel, x, e_x, d, mask, cfg: AnonymiserTrainConfig, g: torch.Generator, disc=None) -> dict:
    """All training losses of one batch (see the module docstring); ``total`` is their weighted sum.

    Args:
        x: ``(B, 3, RES, RES)`` faces; e_x: ``(B, 128)`` their identity embeddings; d: ``(B, 128)``
        donors; mask: ``(B, 1, RES, RES)``.
    """
    y = blend(x, m.G(x, d, mask), mask)
    e_y = idm(random_distortion(y, g, cfg.eot_level))
    dist = (e_y - e_x).norm(dim=1)
    out = {
        "away": F.relu(cfg.away_margin - dist).mean(),
        "donor": (e_y - d).norm(dim=1).mean(),
        "low": masked_l1(gaussian_blur(y, cfg.low_sigma), gaussian_blur(x, cfg.low_sigma), mask),
        "pix": masked_l1(y, x, mask),
        "adv": -disc(y).mean() if disc is not None else y.new_zeros(()),
    }
    bits = binarise(m.E(x))
    y_in = y.detach() if cfg.detach else y  # detached recovery: R's loss never reaches G
    out.update(recovery_terms(m, idm, x, e_x, y_in, bits, mask, cfg, g))
    out["keyless"] = y.new_zeros(())
    if cfg.w_keyless > 0:  # gradients reach G only (R's parameters are left out of this term's graph)
        rand = torch.randint(0, 2, bits.shape, generator=g).to(bits)
        with _frozen(m.R):
            x_guess = m.R(y, rand, mask)
        out["keyless"] = F.relu(cfg.away_margin - (idm(x_guess) - e_x).norm(dim=1)).mean()
    out["total"] = (
        cfg.w_away * out["away"]
        + cfg.w_donor * out["donor"]
        + cfg.w_low * out["low"]
        + cfg.w_pix * out["pix"]
        + cfg.w_rec * out["rec"]
        + cfg.w_rec_id * out["rec_id"]
        + cfg.w_keyless * out["keyless"]
        + cfg.w_adv * out["adv"]
        + cfg.w_gate * out["gate"]
    )
    out["y"] = y
    out["train_id_dist"] = dist.mean().detach()
    return out


def wrong_codes(bits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per row, a code that is not the face's: random (half the rows), all-zero or all-one."""
    b = bits.shape[0]
    kind = torch.randint(0, 4, (b, 1), generator=g).to(bits.device)
    rand = torch.randint(0, 2, bits.shape, generator=g).to(bits)
    return torch.where(kind < 2, rand, torch.where(kind == 2, torch.zeros_like(bits), torch.ones_like(bits)))


def code_gate_loss(R: torch.nn.Module, y: torch.Tensor, bits: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``R`` with a wrong code must give back its input: ``y`` is the detached anonymised face."""
    return masked_l1(R(y, wrong_codes(bits, g), mask), y, mask)


def recovery_terms(m: Models, idm: IdentityModel, x, e_x, y_in, bits, mask, cfg: AnonymiserTrainConfig, g: torch.Generator) -> dict:
    """``R``'s losses: reconstruct ``x`` from a distorted ``y_in`` (the anonymised face, detached
    or not by the caller) and the face's code (``rec``, ``rec_id``), and the code ``gate``."""
    x_hat = m.R(random_distortion(y_in, g, cfg.rec_distort_level, geometric=False), bits, mask)
    return {
        "rec": masked_l1(x_hat, x, mask),
        "rec_id": (idm(x_hat) - e_x).norm(dim=1).mean(),
        "gate": code_gate_loss(m.R, y_in.detach(), bits.detach(), mask, g),
    }


def recovery_losses(m: Models, idm: IdentityModel, x, e_x, d, mask, cfg: AnonymiserTrainConfig, g: torch.Generator) -> dict:
    """``recovery_only``: the recovery terms and the code gate, with ``G`` and ``E`` frozen."""
    with torch.no_grad():
        y = blend(x, m.G(x, d, mask), mask)
        bits = (m.E(x) > 0).to(x.dtype)
    out = recovery_terms(m, idm, x, e_x, y, bits, mask, cfg, g)
    out["total"] = cfg.w_rec * out["rec"] + cfg.w_rec_id * out["rec_id"] + cfg.w_gate * out["gate"]
    out["y"] = y
    return out


def identity_embeddings(idm: IdentityModel, crops: torch.Tensor, batch: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([idm(crops[i : i + batch].float() / 255) for i in range(0, len(crops), batch)])


@torch.no_grad()
def evaluate(
    m: Models, idm: IdentityModel, x: torch.Tensor, e_x: torch.Tensor, donors: torch.Tensor, mask: torch.Tensor, seed: int
) -> dict:
    m.eval()
    g = torch.Generator().manual_seed(seed)
    y = blend(x, m.G(x, donors, mask), mask)
    bits = (m.E(x) > 0).float()
    x_hat = m.R(y, bits, mask)
    x_rand = m.R(y, torch.randint(0, 2, bits.shape, generator=g).float(), mask)
    d_anon = (idm(y) - e_x).norm(dim=1)
    d_rec = (idm(x_hat) - e_x).norm(dim=1)
    d_rand = (idm(x_rand) - e_x).norm(dim=1)
    x_zero = m.R(y, torch.zeros_like(bits), mask)
    x_one = m.R(y, torch.ones_like(bits), mask)
    d_const = torch.minimum((idm(x_zero) - e_x).norm(dim=1), (idm(x_one) - e_x).norm(dim=1))
    mse = (((x_hat - x) ** 2) * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * 3)
    mse_anon = (((y - x) ** 2) * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * 3)
    m.train()
    return {
        "anon_id_dist": float(d_anon.mean()),
        "anon_match": float((d_anon < MATCH_DISTANCE).float().mean()),
        "rec_id_dist": float(d_rec.mean()),
        "rec_match": float((d_rec < MATCH_DISTANCE).float().mean()),
        "randcode_match": float((d_rand < MATCH_DISTANCE).float().mean()),
        "constcode_match": float((d_const < MATCH_DISTANCE).float().mean()),
        "rec_psnr_face_db": float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()),
        "anon_psnr_face_db": float((10 * torch.log10(1 / mse_anon.clamp_min(1e-10))).mean()),
        "_grid": [x[:6], limited_view(x[:6], mask[:6], m.G.view_blur), y[:6], x_hat[:6], x_rand[:6]],
    }


def train(
    cfg: AnonymiserTrainConfig,
    data: Path,
    out: Path,
    device: str = "cpu",
    resume: bool = True,
    log=print,
    init: Path | None = None,
    minutes: float | None = None,
) -> Path:
    """Train (or resume ``out``'s checkpoint); ``init``: start a fresh run from these G/E/R weights;
    ``minutes``: stop (checkpoint and final weights written) once this much time has passed, the
    learning rate's cosine following whichever of steps and time is further along."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    train_crops = prepare_crops(data, "train", cfg.train_images, RES, cfg.seed)
    val_crops = prepare_crops(data, "val", cfg.val_images, RES, cfg.seed)[:64]
    idm = IdentityModel().to(device)
    emb_train = identity_embeddings(idm, train_crops)
    bank_path = out / "donors.npy"
    if bank_path.is_file():
        bank = DonorBank.load(bank_path)
    else:
        bank = DonorBank.synthetic(emb_train.cpu().numpy(), cfg.donors, cfg.seed)
        bank.save(bank_path)
    donors = torch.from_numpy(bank.vectors).to(device)
    mask = face_mask(AlignConfig(size=RES)).to(device)
    m = Models(cfg.width, cfg.code_bits, cfg.view_blur).to(device)
    disc = PatchDiscriminator(2 * cfg.width).to(device)
    params = m.R.parameters() if cfg.recovery_only else m.parameters()
    if cfg.recovery_only:
        for p in [*m.G.parameters(), *m.E.parameters()]:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    clock = Budget(minutes)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * clock.progress(s, cfg.steps))))
    step = 0
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt, device) if resume else None
    if state:
        if state.get("config", {}).get("view_blur", cfg.view_blur) != cfg.view_blur:
            raise SystemExit(
                f"{ckpt} was trained with view_blur {state['config']['view_blur']}, not {cfg.view_blur}: "
                "resume with the same --view-blur or start a new --out"
            )
        m.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        disc.load_state_dict(state["disc"])
        opt_d.load_state_dict(state["opt_d"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        log(f"resumed from {ckpt} at step {step}")
    elif init is not None:
        weights = torch.load(init, map_location=device, weights_only=True)
        check_init_width(init, weights, cfg.width)
        m.load_state_dict({k: v.float() for k, v in weights["model"].items()})
        log(f"initialised from {init}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    x_val = val_crops.to(device).float() / 255
    e_val = identity_embeddings(idm, val_crops).to(device)
    d_val = donors[torch.arange(len(x_val)) % len(donors)]
    g = torch.Generator().manual_seed(cfg.seed + step)
    logf = JsonLog(out / "log.jsonl", log)
    t0 = time.time()
    while step < cfg.steps:
        idx = torch.randint(0, len(train_crops), (cfg.batch,), generator=g)
        x = train_crops[idx].to(device).float() / 255
        e_x = emb_train[idx].to(device)
        if torch.rand(1, generator=g) < 0.5:
            x = x.flip(-1)
            with torch.no_grad():
                e_x = idm(x)
        d = donors[torch.randint(0, len(donors), (cfg.batch,), generator=g).to(device)]
        if cfg.recovery_only:
            losses = recovery_losses(m, idm, x, e_x, d, mask.expand(cfg.batch, -1, -1, -1), cfg, g)
        else:
            losses = step_losses(m, idm, x, e_x, d, mask.expand(cfg.batch, -1, -1, -1), cfg, g, disc)
        loss = losses["total"]
        fake = losses.pop("y").detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
        sched.step()
        if not cfg.recovery_only:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(fake)).mean()  # hinge
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            losses["disc"] = d_loss
        step += 1
        last = step == cfg.steps or clock.spent()
        if step % cfg.log_every == 0 or last:
            ev = evaluate(m, idm, x_val, e_val, d_val, mask.expand(len(x_val), -1, -1, -1), cfg.seed)
            save_grid(ev.pop("_grid"), out / "samples.png")
            logf.write(
                {
                    "step": step,
                    **{k: float(v.detach()) for k, v in losses.items()},
                    "lr": sched.get_last_lr()[0],
                    "elapsed_s": round(time.time() - t0, 1),
                    **ev,
                }
            )
        if step % cfg.ckpt_every == 0 or last:
            save_checkpoint(
                ckpt,
                model=m.state_dict(),
                opt=opt.state_dict(),
                sched=sched.state_dict(),
                disc=disc.state_dict(),
                opt_d=opt_d.state_dict(),
                step=step,
                config=asdict(cfg),
            )
        if last:
            break
    logf.close()
    final = out / "refacex-anonymiser.pt"
    torch.save(
        {"model": m.state_dict(), "width": cfg.width, "code_bits": cfg.code_bits, "view_blur": cfg.view_blur, "detach": cfg.detach}, final
    )
    return final


def main(argv=None) -> None:
    ap = base_parser("train the refacex anonymiser", "runs/anonymiser", "refacex-anonymiser")
    ap.add_argument("--config", choices=list(CONFIGS), default="cpu")
    ap.add_argument("--no-detach", action="store_true", help="ablation: let recovery gradients reach the anonymiser")
    ap.add_argument("--recovery-only", action="store_true", help="fine-tune the recovery network alone (G and E frozen; use with --init)")
    ap.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    ap.add_argument("--view-blur", type=float, help=f"strength of the blur G sees (default: {VIEW_BLUR})")
    ap.add_argument("--minutes", type=float, help="stop after this long (checkpoint and weights written)")
    args = ap.parse_args(argv)
    over = {"steps": args.steps} if args.steps else {}
    if args.no_detach:
        over["detach"] = False
    if args.recovery_only:
        over["recovery_only"] = True
    if args.lr:
        over["lr"] = args.lr
    if args.view_blur:
        over["view_blur"] = args.view_blur
    cfg = AnonymiserTrainConfig(**{**asdict(CONFIGS[args.config]), **over})
    init = resolve_init(args.init, "refacex-anonymiser")
    print(
        train(
            cfg, args.data, args.out, args.device, log=lambda msg: print(msg, file=sys.stderr, flush=True), init=init, minutes=args.minutes
        )
    )


if __name__ == "__main__":
    main()
