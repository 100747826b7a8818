"""``splatdistill compress``: a trained model in, a small viewer-ready model out. This module runs the
job (``compress_model``); the targets are built in ``targets``, the fine-tuning stages live in
``stages``, ``--sweep`` in ``sweep``.

The stages follow LightGaussian (Fan et al., ECCV 2024; METHODS.md §2), with Compact-3DGS's
post-processing (Lee et al., CVPR 2024; METHODS.md §4) in the codec:

0. **Pre-flight** (``outputs.preflight``, the first seconds): the output folder is created and
   written to, and the input model goes once through every writer the run will use (``.sdz`` with
   the run's SH degree, bit depths and colour-VQ / R-VQ layout, ``.ply``, ``.spz``), so a path or
   codec problem is a one-line error before any optimisation.
1. **Targets.** With ``data``: the dataset's training views (ground truth) for the fine-tunes,
   its test views for the final metrics. Without (**data-free**): cameras sampled around the
   model — a Fibonacci sphere and an orbit (``data/views.py``) around the robust bounding sphere
   of the means, at ``radius / sin(fov / 2)`` ≈ 2.4 × its radius for a 50° field of view — and
   the input model's own renders as targets; the final metrics use a held-out orbit at another
   elevation, against the input model's renders of it.
2. **Prune** the lowest ``prune`` fraction (66 % in LightGaussian) by the chosen policy
   (``policies.py``: LightGaussian significance, Compact-3DGS mask or Confident-Splatting
   confidence; learned gates are trained for the first half of the fine-tune, then baked into
   the opacities / scales), exactly ``round(prune · N)`` Gaussians removed, then co-adapt with the
   photometric loss 0.8 L1 + 0.2 D-SSIM (LightGaussian: 5k iterations; here ``iterations``).
3. **SH distillation** to degree D (skipped when D is the input degree): the student (the pruned
   scene truncated to degree D) is fitted to the frozen *uncompressed* model's renders, two
   iterations out of three on pseudo views (training camera centres + N(0, (0.05 · extent)²) per
   axis, orientation kept; LightGaussian).
4. **Colour VQ** (``codec.build_color_vq``): the least significant fraction ``vq_ratio`` (60 % in
   LightGaussian) of the Gaussians share a codebook of ``vq_size`` (8192) colour vectors fitted by
   significance-weighted k-means; the others keep their own colour. Then a short fine-tune of the
   codebook (a learnable tensor: the VQ'd colours are ``codebook[assign]``), the kept colours and
   all non-colour attributes (``iterations // 2`` steps).
   Optionally (``rvq_stages`` > 0), Compact-3DGS's **residual VQ** of log-scales and rotations
   (6 stages × 64 codewords in the paper): significance-weighted k-means per stage on the
   residual, then a fine-tune of the codebooks, positions and opacities (``iterations // 2``).
   Off by default: six 6-bit indices stored in bytes cost more than the 3 + 4 one-byte codes they
   replace, for no PSNR gain on the demo student (docs/benchmarks.md, ``make demo``).
5. **Encode**: per-attribute quantisation, Morton order and zstd (``codec.save_sdz``) →
   ``OUT/model.sdz``; the decoded scene → ``OUT/model.ply`` (any 3DGS viewer) and, optionally,
   ``OUT/model.spz``. Each is written under a temporary name and read back; all of them (with
   ``summary.json``) are renamed into place only at the very end (``outputs.StagedOutputs``), so a
   failure leaves nothing under a final name.
6. **Evaluate** the *decoded* ``.sdz`` scene: PSNR, SSIM, LPIPS-VGG against the evaluation targets;
   ``OUT/summary.json`` holds them with the sizes, counts, per-stage timings and settings.

Deviations from LightGaussian: fine-tunes are ``iterations`` (1000) steps instead of 5k (a
CPU-friendly default); the codebook is capped at one codeword per 16 VQ'd Gaussians
(``vq_size_effective``): a codeword costs 2 · 3(D+1)² bytes (fp16), as much as storing a colour
directly, and LightGaussian's 8192 codewords serve ~70 Gaussians each on its scenes; the kept
colours are stored as 8-bit (DC) and 5–8-bit (rest) per-channel codes instead of fp16.

Presets (``--quality``; explicit flags override them; the SH degree is capped at the input's):

==========  =====  ===  =======  ========  ==================================================
preset      prune  SH   VQ size  VQ ratio  codec bits (opacity / SH DC / SH rest of kept ones)
==========  =====  ===  =======  ========  ==================================================
high        0.5    3    8192     0.4       12 / 8 / 8
balanced    0.66   2    8192     0.6       10 / 8 / 6
small       0.8    1    4096     0.8       10 / 8 / 5
==========  =====  ===  =======  ========  ==================================================

All presets store positions as fp16 (relative to their median), rotations and log-scales as 8-bit
per-channel uniform codes, the codebook as fp16. The kept colours' 8-bit DC + 6-bit rest codes (fp16 in
LightGaussian) and the codeword cap lose little PSNR for much of the size; opacity gets more bits than
the codec default of 8 because the many faint Gaussians switch on and off around the renderer's 1/255
alpha cut-off (docs/benchmarks.md, "Measurements behind design choices").
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from splatdistill.compress.config import PRESETS, CompressConfig, Quality  # noqa: F401 (re-exported)
from splatdistill.compress.stages import (  # noqa: F401
    VQ_POINTS_PER_CODEWORD,
    distill_sh_stage,
    prune_stage,
    pruned_count,
    rvq_stage,
    vq_stage,
)
from splatdistill.compress.sweep import plot_rate_distortion, run_sweep, sweep_markdown, sweep_settings  # noqa: F401
from splatdistill.compress.targets import Layered, Targets, evaluate, load_input, prepare_targets, sample_cameras  # noqa: F401
from splatdistill.errors import UserError
from splatdistill.fileio import write_json_atomic
from splatdistill.scene.gaussians import GaussianScene


def _device(name: str) -> torch.device:
    from splatdistill.device import pick_device

    return pick_device(name)


def _model_bytes(model_path) -> int:
    """Size of the input model on disk (a SOG folder / meta.json: with its textures)."""
    from splatdistill.formats.io import size_on_disk

    return size_on_disk(model_path)


def compress_model(
    model_path,
    out_dir,
    data=None,
    cfg: CompressConfig | None = None,
    *,
    scene: GaussianScene | None = None,
    targets: Targets | None = None,
) -> dict:
    """Compress the model at ``model_path`` into ``out_dir`` (model.sdz, model.ply, model.spz,
    summary.json); returns the summary. ``scene`` / ``targets`` may be passed to reuse them (sweeps).

    Before any optimisation the output folder and every writer are checked on the input model
    (``outputs.preflight``); the outputs are written under temporary names and renamed into place
    together at the end (``outputs.StagedOutputs``), so a failure leaves no final-named file behind."""
    from splatdistill.compress.outputs import StagedOutputs, preflight

    cfg = cfg or CompressConfig()
    if data is None and targets is None and cfg.training_free is not False:
        from splatdistill.compress.trainingfree import compress_training_free

        return compress_training_free(model_path, out_dir, cfg, scene=scene)
    model_path, out = Path(model_path), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", out)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = scene if scene is not None else load_input(model_path)
    s = cfg.settings(scene.sh_degree)
    preflight_info = preflight(
        scene, out, s, pruned_count(len(scene), s["prune"]), cfg.write_spz, VQ_POINTS_PER_CODEWORD, cfg.spz_version
    )
    timings["preflight"] = time.perf_counter() - t0
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if targets is None:
        targets = prepare_targets(scene, data, cfg, device)
    timings["targets"] = time.perf_counter() - t0
    n_in = len(scene)
    work = scene.to(device)

    t0 = time.perf_counter()
    work, prune_info = prune_stage(
        work, targets, s["prune"], s["prune_policy"], s["iterations"], cfg.seed, cfg.progress
    )
    timings["prune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, sh_info = distill_sh_stage(work, targets, s["sh_degree"], s["iterations"], cfg.seed, cfg.progress)
    timings["sh_distill"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, vq, vq_info = vq_stage(
        work, targets, s["vq_size"], s["vq_ratio"], s["iterations"] // 2, cfg.seed, cfg.progress
    )
    timings["vq"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, rvq, rvq_info = rvq_stage(
        work, targets, s["rvq_stages"], s["rvq_size"], s["iterations"] // 2, cfg.seed, cfg.progress
    )
    timings["rvq"] = time.perf_counter() - t0

    with StagedOutputs(out) as staged:
        try:
            summary = _finish(
                model_path, data, cfg, s, scene, work, vq, rvq, targets, staged, n_in, device, timings, t_all
            )
            summary["stages"] = {
                "preflight": preflight_info,
                "prune": prune_info,
                "sh_distill": sh_info,
                "vq": vq_info,
                "rvq": rvq_info,
            }
            write_json_atomic(staged.path("summary.json"), summary)
        except UserError as e:
            raise staged.final_name(e) from None
        except OSError as e:  # e.g. the disk filled up during the run
            raise UserError(f"cannot write the outputs ({e.strerror or e})", out) from None
        staged.commit()
    return summary


def _finish(model_path, data, cfg, s, scene, work, vq, rvq, targets, staged, n_in, device, timings, t_all) -> dict:
    """Encode, read back and evaluate the result into ``staged``'s temporary files; the summary."""
    from splatdistill.formats.ply import read_ply, write_ply
    from splatdistill.formats.sdz import load_sdz, save_sdz
    from splatdistill.formats.spz import read_spz, write_spz

    t0 = time.perf_counter()
    final = work.detach().to("cpu")
    final.antialiased = scene.antialiased  # the stages rebuild scenes; the outputs keep the flag
    if vq is not None:
        vq = dict(vq, kept_encoding=s["kept_encoding"])
    extra = {"source": model_path.name, "settings": {k: v for k, v in s.items() if k != "bits"}}
    sdz = save_sdz(
        final, staged.path("model.sdz"), vq=vq, bits=s["bits"], position=s["position"], extra_meta=extra, rvq=rvq
    )
    decoded = load_sdz(sdz)
    decoded.antialiased = final.antialiased
    ply = write_ply(decoded, staged.path("model.ply"))
    read_ply(ply)
    spz_bytes, spz_error = None, None
    if cfg.write_spz:
        try:
            spz = write_spz(final, staged.path("model.spz"), version=cfg.spz_version, antialiased=final.antialiased)
            read_spz(spz)
            spz_bytes = os.path.getsize(spz)
        except UserError as e:
            spz_error = e.message
            staged.drop("model.spz")
    timings["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from splatdistill.ops.lpips import LPIPSBank

    bank = LPIPSBank()
    metrics = evaluate(decoded, targets, cfg.lpips, bank, cfg.progress)
    pre = evaluate(final, targets, False, bank, cfg.progress)
    input_metrics = evaluate(scene, targets, False, bank, cfg.progress) if targets.mode == "data" else None
    timings["evaluate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    in_bytes, out_bytes = _model_bytes(model_path), os.path.getsize(sdz)
    return {
        "input": str(model_path),
        "mode": targets.mode,
        "data": None if data is None else str(data),
        "input_bytes": in_bytes,
        "output_bytes": out_bytes,
        "ratio": in_bytes / out_bytes,
        "num_gaussians_input": n_in,
        "num_gaussians": len(decoded),
        "sh_degree_input": scene.sh_degree,
        "sh_degree": decoded.sh_degree,
        "antialiased": bool(final.antialiased),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "lpips_vgg": metrics["lpips_vgg"],
        **({"lpips_error": metrics["lpips_error"]} if metrics.get("lpips_error") else {}),
        "psnr_before_quantization": pre["psnr"],
        "input_psnr": None if input_metrics is None else input_metrics["psnr"],
        "evaluated_on": f"{len(targets.eval_cams)} {targets.eval_kind}",
        "ply_bytes": os.path.getsize(ply),
        "spz_bytes": spz_bytes,
        **({"spz_error": spz_error} if spz_error else {}),
        "settings": s,
        "data_free_views": None
        if targets.mode == "data"
        else {
            "train": len(targets.train_cams),
            "eval": len(targets.eval_cams),
            "resolution": cfg.resolution,
            "fov_deg": cfg.fov_deg,
            "background": list(targets.background),
        },
        "timings_s": timings,
        "device": str(device),
    }


def config_dict(cfg: CompressConfig) -> dict:
    return asdict(cfg)
