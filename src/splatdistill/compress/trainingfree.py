"""Training-free compression: a trained model in, a small one out, in seconds per million Gaussians.

The default of ``compress`` without a dataset. No gradient steps (``refine`` > 0 adds a short
fine-tune against the input's own renders); every stage is a closed form or a single pass:

1. **importance** — each Gaussian's accumulated blending weight ``sum alpha T`` over the pixels of
   a few forward renders (``importance_views`` cameras on a sphere + orbit around the model, at
   ``importance_resolution``), times LightGaussian's volume factor: its global significance
   (METHODS.md §2), computed by a compositing kernel that adds the weights up instead of colours
   (no backward pass). ``importance_views = 0``: opacity x volume factor, no renders at all.
2. **reduce** — N -> round((1 - prune) N) Gaussians by the cheapest mix of prunes and
   moment-matched pairwise merges (``merge.py``; NanoGS / splat-transform ``-F``).
3. **SH** — degree reduction by the closed-form least-squares fit of the lower bands over the
   importance cameras' viewing directions (``shfit.py``).
4. **refine** (optional, ``refine`` iterations) — the pipeline's photometric fine-tune against the
   input model's renders.
5. **encode** — the packed codec (``packed.py``): Morton order, SOG-style codebooks (k-means palette
   of the SH rest, ``kmeans.py``), quantisation, zstd. Writes model.sdz, model.ply (the decoded
   scene) and model.spz.
6. **evaluate** — PSNR / SSIM / LPIPS of the decoded scene against the input's renders of a
   held-out orbit.

``lod`` (shares of the input's Gaussians, e.g. (1, 0.5, 0.25, 0.1)) writes a ladder of separate
models ``lod/lod<i>.{sdz,ply,spz}`` + ``lod/lod.json`` from one importance pass (separate files per
level: PlayCanvas splat-transform assembles its streamed LOD format from one input file per level,
``splat-transform lod0.ply -l 0 lod1.ply -l 1 ... lod-meta.json``; Spark builds its own LoD tree from
one file at load time).

Every stage reports its Gaussian count on stderr (``progress``) and its seconds and peak resident
memory (sampled every 20 ms from /proc) in ``summary.json``.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from splatdistill.errors import UserError
from splatdistill.fileio import write_json_atomic
from splatdistill.render.cpu_kernels import ALPHA_MAX, ALPHA_MIN, T_MIN, _pixel_range
from splatdistill.scene.gaussians import GaussianScene

# Training-free settings per preset: the SH palette size (k-means codewords for the SH rest), at
# most one codeword per POINTS_PER_CODEWORD Gaussians (an explicit --palette-size: per 8).
PALETTE = {"high": 16384, "balanced": 8192, "small": 4096}
POINTS_PER_CODEWORD = {"high": 8, "balanced": 8, "small": 32}
_MIN_POINTS_PER_CODEWORD = 8
# The packed codec's precision per preset where no flag sets it (``encode_packed`` keywords). high is
# the finest (16-bit positions, 8-bit rotations, 256-level tables, 12-bit opacity); balanced and small
# spend fewer bits where their reduction's own error dominates, so that their .sdz is no larger than
# the .spz of the same Gaussians and still above it in quality (docs/benchmarks.md, "Preset codecs").
CODEC = {
    "high": {"position_bits": 16, "quat_bits": 8, "codebook_levels": 256, "opacity_bits": 12},
    "balanced": {"position_bits": 14, "quat_bits": 7, "codebook_levels": 128, "opacity_bits": 9},
    "small": {"position_bits": 12, "quat_bits": 6, "codebook_levels": 64, "opacity_bits": 8},
}


# ---- memory / time meter -----------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMeter:
    """``with meter.stage("name", n_in) as st: ...; st.n_out = m`` records seconds and peak RSS."""

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.stages: dict[str, dict] = {}
        self.peak = _rss_bytes()

    class _Stage:
        def __init__(self, meter, name, n_in):
            self.meter, self.name, self.n_in, self.n_out = meter, name, n_in, None

        def __enter__(self):
            self.stop = threading.Event()
            self.peak = _rss_bytes()

            def sample():
                while not self.stop.wait(0.02):
                    self.peak = max(self.peak, _rss_bytes())

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
            self.t0 = time.perf_counter()
            return self

        def __exit__(self, *exc):
            dt = time.perf_counter() - self.t0
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, _rss_bytes())
            self.meter.peak = max(self.meter.peak, self.peak)
            rec = {"seconds": dt, "peak_rss_bytes": int(self.peak), "gaussians_in": int(self.n_in)}
            if self.n_out is not None:
                rec["gaussians_out"] = int(self.n_out)
            self.meter.stages[self.name] = rec
            if self.meter.progress and exc[0] is None:
                out = f" -> {self.n_out:,}" if self.n_out is not None and self.n_out != self.n_in else ""
                print(
                    f"splatdistill: {self.name}: {self.n_in:,}{out} Gaussians, {dt:.1f} s, "
                    f"peak {self.peak / 2**30:.2f} GiB",
                    file=sys.stderr,
                    flush=True,
                )
            return False

    def stage(self, name: str, n_in: int):
        return self._Stage(self, name, n_in)


# ---- importance from forward renders ------------------------------------------------------------------
@njit(cache=True, parallel=True, fastmath=False)
def _accumulate_weights(means2d, conics, opacities, radii, offsets, ids, width, height, tile_size, tiles_x, out_w):
    """The forward compositing of ``render.cpu_kernels.rasterize_forward`` (same thresholds:
    alpha >= 1/255, alpha <= 0.999, stop at T <= 1e-4), adding each intersection's blending weight
    ``alpha T`` over its pixels into ``out_w[j]`` (one slot per (tile, Gaussian), no races)."""
    n_tiles = offsets.shape[0] - 1
    npix = tile_size * tile_size
    for t in prange(n_tiles):
        start, end = offsets[t], offsets[t + 1]
        ty, tx = t // tiles_x, t % tiles_x
        x_lo, y_lo = tx * tile_size, ty * tile_size
        w_t, h_t = min(tile_size, width - x_lo), min(tile_size, height - y_lo)
        T = np.ones(npix, dtype=np.float32)
        done = np.zeros(npix, dtype=np.bool_)
        n_live = w_t * h_t
        for j in range(start, end):
            if n_live == 0:
                break
            g = ids[j]
            mx, my = means2d[g, 0], means2d[g, 1]
            a_, b_, c_ = conics[g, 0], conics[g, 1], conics[g, 2]
            op = opacities[g]
            s_max = np.float32(math.log(255.0 * op) + 1e-3)
            x0, x1 = _pixel_range(x_lo, tile_size, width, mx, radii[g, 0])
            y0, y1 = _pixel_range(y_lo, tile_size, height, my, radii[g, 1])
            acc = np.float32(0.0)
            for py in range(y0, y1):
                dy = my - (np.float32(py) + np.float32(0.5))
                row = (py - y_lo) * tile_size - x_lo
                for px in range(x0, x1):
                    p = row + px
                    if done[p]:
                        continue
                    dx = mx - (np.float32(px) + np.float32(0.5))
                    sigma = np.float32(0.5) * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
                    if sigma < 0.0 or sigma > s_max:
                        continue
                    alpha = min(ALPHA_MAX, op * np.float32(math.exp(-sigma)))
                    if alpha < ALPHA_MIN:
                        continue
                    tp = T[p]
                    next_t = tp * (np.float32(1.0) - alpha)
                    if next_t <= T_MIN:
                        done[p] = True
                        n_live -= 1
                        continue
                    acc += alpha * tp
                    T[p] = next_t
            out_w[j] = acc


def blend_weights(scene: GaussianScene, cameras) -> np.ndarray:
    """(N,) float64: sum over the cameras' pixels of each Gaussian's blending weight alpha T (the
    value ``distill.importance.accumulated_weights`` gets from a backward pass), forward only."""
    from splatdistill.cameras.camera import stack_cameras
    from splatdistill.render.api import project_cpu
    from splatdistill.render.cpu_kernels import bin_tiles

    s = scene.detach().to("cpu")
    n = len(s)
    total = np.zeros(n, np.float64)
    if n == 0:
        return total
    ts = 16
    with torch.no_grad():
        scales, opac = torch.exp(s.scales), torch.sigmoid(s.opacities)
        for cam in cameras:
            cb = stack_cameras([cam], "cpu")
            pr = project_cpu(s.means, s.quats, scales, opac, cb.viewmats, cb.Ks, cb.width, cb.height)
            m2d = pr.means2d[0].numpy()
            con = pr.conics[0].numpy()
            rad = pr.radii[0].numpy().astype(np.int32)
            tiles_x, tiles_y = (cb.width + ts - 1) // ts, (cb.height + ts - 1) // ts
            offsets, ids = bin_tiles(m2d, rad, pr.depths[0].numpy(), ts, tiles_x, tiles_y)
            w = np.zeros(len(ids), np.float32)
            _accumulate_weights(
                m2d, con, np.ascontiguousarray(opac.numpy()), rad, offsets, ids, cb.width, cb.height, ts, tiles_x, w
            )
            total += np.bincount(ids, weights=w, minlength=n)
    return total


def volume_factor_np(log_scales: np.ndarray, beta: float = 0.1, percentile: float = 0.9) -> np.ndarray:
    """LightGaussian's (V / V90)^beta clipped to [0, 1] (``distill.importance.volume_factor``)."""
    vol = np.exp(np.asarray(log_scales, np.float64).sum(axis=1))
    if vol.size == 0:
        return vol
    ref = max(float(np.quantile(vol, percentile)), 1e-30)
    return np.clip(vol / ref, 0.0, 1.0) ** beta


def importance_scores(scene: GaussianScene, cameras) -> np.ndarray:
    """Global significance from forward renders, or (no cameras) opacity x volume factor."""
    logs = scene.scales.detach().cpu().numpy()
    if not cameras:
        alpha = torch.sigmoid(scene.opacities.detach()).cpu().numpy().astype(np.float64)
        return alpha * volume_factor_np(logs)
    return blend_weights(scene, cameras) * volume_factor_np(logs)


# ---- helpers ------------------------------------------------------------------------------------------
def _np_params(scene: GaussianScene) -> dict:
    return {k: v.detach().cpu().to(torch.float32).numpy() for k, v in scene.items()}


def _scene_from(p: dict, antialiased: bool) -> GaussianScene:
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return GaussianScene(
        t(p["means"]),
        t(p["quats"]),
        t(p["scales"]),
        t(p["opacities"]),
        t(p["sh0"]),
        t(p["shN"]),
        antialiased=antialiased,
    )


def parse_lod(spec) -> list[float] | None:
    """``"1,0.5,0.25"`` or a sequence -> descending shares in (0, 1]; None for none."""
    if spec is None or spec == "" or spec == ():
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        shares = [float(x) for x in items]
    except (TypeError, ValueError):
        raise UserError(f"--lod must be a comma-separated list of shares in (0, 1], got {spec!r}") from None
    if not shares or any(not 0.0 < s <= 1.0 for s in shares):
        raise UserError(f"--lod shares must be in (0, 1], got {spec!r}")
    return sorted(set(shares), reverse=True)


def reduce_and_fit(
    p: dict,
    imp: np.ndarray,
    n_target: int,
    degree: int,
    centers: np.ndarray,
    merge: bool,
    meter: StageMeter | None = None,
    suffix: str = "",
) -> tuple[dict, np.ndarray, dict]:
    """Stages 2 and 3 on raw numpy parameters."""
    from splatdistill.compress.merge import reduce_gaussians
    from splatdistill.compress.shfit import fit_lower_bands

    n = len(imp)
    ctx = meter.stage(f"reduce{suffix}", n) if meter else _Null()
    with ctx as st:
        q, qimp, info = reduce_gaussians(p, imp, n_target, merge=merge)
        st.n_out = len(qimp)
    k_full = q["shN"].shape[1] + 1
    deg_full = int(round(math.sqrt(k_full))) - 1
    ctx = meter.stage(f"sh_fit{suffix}", len(qimp)) if meter else _Null()
    with ctx as st:
        if degree < deg_full:
            sh = np.concatenate([q["sh0"], q["shN"]], axis=1)
            low = fit_lower_bands(q["means"], sh, degree, centers)
            q = dict(q, sh0=np.ascontiguousarray(low[:, :1]), shN=np.ascontiguousarray(low[:, 1:]))
        st.n_out = len(qimp)
    return q, qimp, info


class _Null:
    n_out = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def palette_size(preset_k: int, n: int, per: int = _MIN_POINTS_PER_CODEWORD) -> int:
    """Codewords of the SH palette: ``preset_k``, at most one per ``per`` Gaussians, at least one."""
    return int(max(1, min(preset_k, n // per)))


# ---- the whole job ------------------------------------------------------------------------------------
def codec_settings(s: dict, cfg) -> dict:
    """The packed codec's precision for this run (``encode_packed`` keyword arguments): the flags,
    the preset's ``CODEC`` where a flag is not given."""
    base = CODEC[s["quality"]]
    given = {
        "position_bits": cfg.position_bits,
        "quat_bits": cfg.rotation_bits,
        "codebook_levels": cfg.codebook_levels,
        "opacity_bits": cfg.opacity_bits,
    }
    return {k: int(base[k] if v is None else v) for k, v in given.items()}


def run_palette_size(s: dict, cfg, n: int) -> int:
    """The SH palette size of a run over ``n`` Gaussians: --palette-size or the preset's."""
    if cfg.palette_size:
        return palette_size(cfg.palette_size, n)
    return palette_size(PALETTE[s["quality"]], n, POINTS_PER_CODEWORD[s["quality"]])


def _preflight_codec(scene: GaussianScene, s: dict, cfg, target: Path) -> None:
    """Before any work: the packed codec stores (and gives back) a probe of the model with the run's
    SH degree: the Gaussians at the extremes of every coordinate, scale and opacity, and a sample."""
    from splatdistill.formats.packed import decode_packed, encode_packed

    n = len(scene)
    if n == 0:
        return
    p = {k: v.detach().cpu().numpy().reshape(n, -1) for k, v in scene.items()}
    pick = {int(i) for k in ("means", "scales", "opacities") for i in (*p[k].argmin(0), *p[k].argmax(0))}
    pick |= set(np.random.default_rng(0).choice(n, size=min(n, 1024), replace=False).tolist())
    probe = scene[torch.as_tensor(sorted(pick))].with_sh_degree(s["sh_degree"])
    try:
        sections, meta = encode_packed(
            probe,
            vq_size=palette_size(64, len(probe)),
            seed=cfg.seed,
            **codec_settings(s, cfg),
        )
        back = decode_packed(sections, meta)
    except UserError as e:
        raise UserError(f"the model cannot be stored with these settings: {e.message}", target) from None
    if len(back) != len(probe) or back.sh_degree != probe.sh_degree:
        raise UserError("the .sdz codec does not give the model back (a bug)", target)


def compress_training_free(model_path, out_dir, cfg, *, scene: GaussianScene | None = None) -> dict:
    """``compress`` without a dataset and without training (see the module docstring)."""
    from splatdistill.cameras.camera import stack_cameras
    from splatdistill.compress.targets import evaluate, load_input, sample_cameras
    from splatdistill.formats.container import write_container
    from splatdistill.formats.packed import encode_packed, section_bytes
    from splatdistill.formats.ply import write_ply
    from splatdistill.formats.sdz import load_sdz
    from splatdistill.formats.spz import write_spz
    from splatdistill.render import render

    model_path, out = Path(model_path), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", out)
    lod = parse_lod(getattr(cfg, "lod", None))
    if cfg.importance_views < 0 or cfg.importance_resolution < 8:
        raise UserError("--importance-views must be >= 0 and --importance-resolution >= 8")
    if cfg.refine < 0:
        raise UserError(f"--refine must be >= 0, got {cfg.refine}")
    from splatdistill.compress.outputs import check_outputs

    check_outputs(
        out,
        ["model.sdz", "model.ply", "summary.json"]
        + (["model.spz"] if cfg.write_spz else [])
        + (["lod"] if lod else []),
    )
    meter = StageMeter(cfg.progress)
    t_all = time.perf_counter()
    with meter.stage("load", 0) as st:
        scene = scene if scene is not None else load_input(model_path)
        s = replace(cfg, eval_views=max(1, cfg.eval_views)).settings(scene.sh_degree)  # eval_views 0: no metrics
        st.n_out = len(scene)
    _preflight_codec(scene, s, cfg, out / "model.sdz")
    out.mkdir(parents=True, exist_ok=True)
    n_in = len(scene)
    aa = scene.antialiased
    torch.manual_seed(cfg.seed)

    icfg = replace(cfg, views=max(1, cfg.importance_views), resolution=cfg.importance_resolution)
    imp_cams, _, _ = sample_cameras(scene, icfg if cfg.importance_views else replace(icfg, views=8))
    centers = np.stack([c.center for c in imp_cams])  # viewing directions for the SH fit (no renders)
    if cfg.importance_views == 0:
        imp_cams = []
    _, eval_cams, _ = sample_cameras(scene, replace(cfg, eval_views=max(1, cfg.eval_views)))
    background = tuple(cfg.background) if cfg.background is not None else (0.0, 0.0, 0.0)

    with meter.stage("importance", n_in) as st:
        imp = importance_scores(scene, imp_cams)
        st.n_out = n_in
    p = _np_params(scene)
    shares = lod or [1.0 - s["prune"]]
    levels = []
    for li, share in enumerate(shares):
        suffix = "" if li == 0 else f"_lod{li}"
        n_target = max(1, int(round(share * n_in)))
        q, qimp, red_info = reduce_and_fit(p, imp, n_target, s["sh_degree"], centers, cfg.merge, meter, suffix)
        levels.append((share, q, qimp, red_info))
    del p

    # the main output: the first (largest) level
    share, q, qimp, red_info = levels[0]
    work = _scene_from(q, aa)
    refine_info = {"iterations": int(cfg.refine)}
    targets = None
    if cfg.refine > 0:
        from splatdistill.compress.stages import finetune, finetune_lrs, train_picker
        from splatdistill.compress.targets import prepare_targets
        from splatdistill.ops.optim import adam, make_params, scene_of

        with meter.stage("refine", len(work)) as st:
            device = (
                torch.device("cpu")
                if cfg.device == "auto" and not torch.cuda.is_available()
                else torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
            )
            targets = prepare_targets(scene, None, cfg, device)
            params = make_params(dict(work.to(device).items()))
            opt = adam(params, finetune_lrs(targets.extent))
            refine_info["loss"] = finetune(
                lambda: scene_of(params),
                params,
                opt,
                int(cfg.refine),
                train_picker(targets, cfg.seed),
                targets,
                "refine",
                cfg.progress,
            )
            work = GaussianScene(**dict(scene_of(params).detach().to("cpu").items()), antialiased=aa)
            st.n_out = len(work)

    codec = codec_settings(s, cfg)
    extra = {
        "source": model_path.name,
        "mode": "training-free",
        "settings": {k: v for k, v in s.items() if k != "bits"},
    }

    def encode_level(scn: GaussianScene, w: np.ndarray, stem: Path, name: str, write_spz_too: bool) -> dict:
        with meter.stage(f"encode{name}", len(scn)) as st:
            k = run_palette_size(s, cfg, len(scn))
            sections, meta = encode_packed(scn, importance=w, vq_size=k, seed=cfg.seed, extra_meta=extra, **codec)
            write_container(stem.with_suffix(".sdz"), sections, meta, level=cfg.zstd_level)
            decoded = load_sdz(stem.with_suffix(".sdz"))
            write_ply(decoded, stem.with_suffix(".ply"))
            spz_bytes, spz_err = None, None
            if write_spz_too:
                try:
                    write_spz(scn, stem.with_suffix(".spz"), version=cfg.spz_version)
                    spz_bytes = os.path.getsize(stem.with_suffix(".spz"))
                except UserError as e:
                    spz_err = e.message
            st.n_out = len(decoded)
        return {
            "decoded": decoded,
            "palette_size": k,
            "spz_bytes": spz_bytes,
            "spz_error": spz_err,
            "sdz_bytes": os.path.getsize(stem.with_suffix(".sdz")),
            "ply_bytes": os.path.getsize(stem.with_suffix(".ply")),
            "section_bytes": section_bytes(stem.with_suffix(".sdz")),
        }

    main = encode_level(work, qimp, out / "model", "", cfg.write_spz)
    decoded = main["decoded"]

    lod_rows = []
    if lod:
        (out / "lod").mkdir(exist_ok=True)
        for li, (share_i, qi, wi, info_i) in enumerate(levels):
            if li == 0:
                import shutil

                for ext in (".sdz", ".ply") + ((".spz",) if main["spz_bytes"] else ()):
                    shutil.copyfile(out / f"model{ext}", out / "lod" / f"lod{li}{ext}")
                r = main
            else:
                r = encode_level(_scene_from(qi, aa), wi, out / "lod" / f"lod{li}", f"_lod{li}", cfg.write_spz)
            lod_rows.append(
                {
                    "level": li,
                    "share": share_i,
                    "num_gaussians": int(len(r["decoded"])),
                    "files": {
                        ext: f"lod{li}{ext}" for ext in (".sdz", ".ply") if (out / "lod" / f"lod{li}{ext}").exists()
                    }
                    | ({".spz": f"lod{li}.spz"} if (out / "lod" / f"lod{li}.spz").exists() else {}),
                    "sdz_bytes": r["sdz_bytes"],
                    "spz_bytes": r["spz_bytes"],
                    "reduce": info_i,
                }
            )
        write_json_atomic(
            out / "lod" / "lod.json",
            {
                "source": model_path.name,
                "num_gaussians_input": n_in,
                "levels": lod_rows,
                "note": "level 0 is the most detailed; each level is a separate model "
                "(e.g. splat-transform lod0.ply -l 0 lod1.ply -l 1 ... lod-meta.json)",
            },
        )

    metrics, t_eval = {"psnr": None, "ssim": None, "lpips_vgg": None}, None
    eval_kind = "input model renders of a held-out orbit"
    if cfg.eval_views > 0:
        from splatdistill.compress.targets import Targets
        from splatdistill.ops.lpips import LPIPSBank

        with meter.stage("evaluate", len(decoded)) as st:
            t0 = time.perf_counter()
            imgs = []
            for cam in eval_cams:
                with torch.no_grad():
                    imgs.append(
                        render(scene, stack_cameras([cam], "cpu"), background=background).rgb[0].to(torch.float16)
                    )
            tg = Targets(
                mode="data-free",
                train_cams=imp_cams,
                train_images=[],
                eval_cams=eval_cams,
                eval_images=imgs,
                eval_kind=eval_kind,
                background=background,
                extent=1.0,
                teacher=scene,
                device=torch.device("cpu"),
            )
            metrics = evaluate(decoded, tg, cfg.lpips, LPIPSBank() if cfg.lpips else None, False)
            t_eval = time.perf_counter() - t0
            st.n_out = len(decoded)
    total = time.perf_counter() - t_all
    timings = {k: v["seconds"] for k, v in meter.stages.items()}
    timings["total"] = total
    timings["total_without_evaluate"] = total - (t_eval or 0.0)
    in_bytes, out_bytes = os.path.getsize(model_path) if model_path.exists() else None, main["sdz_bytes"]
    summary = {
        "input": str(model_path),
        "mode": "training-free" if cfg.refine == 0 else "training-free+refine",
        "data": None,
        "input_bytes": in_bytes,
        "output_bytes": out_bytes,
        "ratio": None if in_bytes is None else in_bytes / out_bytes,
        "num_gaussians_input": n_in,
        "num_gaussians": len(decoded),
        "sh_degree_input": scene.sh_degree,
        "sh_degree": decoded.sh_degree,
        "antialiased": bool(decoded.antialiased),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "lpips_vgg": metrics["lpips_vgg"],
        **({"lpips_error": metrics["lpips_error"]} if metrics.get("lpips_error") else {}),
        "evaluated_on": f"{len(eval_cams) if cfg.eval_views > 0 else 0} {eval_kind}",
        "ply_bytes": main["ply_bytes"],
        "spz_bytes": main["spz_bytes"],
        **({"spz_error": main["spz_error"]} if main["spz_error"] else {}),
        "section_bytes": main["section_bytes"],
        "settings": dict(
            s,
            importance_views=cfg.importance_views,
            importance_resolution=cfg.importance_resolution,
            merge=cfg.merge,
            palette_size=main["palette_size"],
            refine=int(cfg.refine),
        ),
        "data_free_views": {
            "importance": len(imp_cams),
            "eval": len(eval_cams) if cfg.eval_views > 0 else 0,
            "importance_resolution": cfg.importance_resolution,
            "resolution": cfg.resolution,
            "fov_deg": cfg.fov_deg,
            "background": list(background),
        },
        "stages": {"reduce": red_info, "refine": refine_info},
        "stage_metrics": meter.stages,
        "timings_s": timings,
        "peak_rss_bytes": int(meter.peak),
        "lod": lod_rows or None,
        "device": "cpu",
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
