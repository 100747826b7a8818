"""``compress --sweep``: the presets and two more prune ratios on one set of targets, their table and
the rate-distortion plot."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from splatdistill.compress.config import PRESETS, CompressConfig
from splatdistill.compress.stages import VQ_POINTS_PER_CODEWORD, pruned_count
from splatdistill.compress.targets import load_input, prepare_targets
from splatdistill.fileio import atomic_path, write_bytes_atomic, write_json_atomic


def sweep_settings(cfg: CompressConfig) -> list[tuple[str, CompressConfig]]:
    """The three presets, then the balanced preset at two more prune ratios. Explicit settings of
    ``cfg`` (SH degree, VQ, policy, iterations, ...) apply to every run; the prune variants set
    their own prune ratio."""
    runs = [(q, replace(cfg, quality=q)) for q in PRESETS]
    for p in (0.5, 0.8):
        runs.append((f"balanced_prune{int(round(p * 100))}", replace(cfg, quality="balanced", prune=p)))
    return runs


def run_sweep(model_path, out_dir, data=None, cfg: CompressConfig | None = None) -> dict:
    """Compress with several settings into ``OUT/<name>/``; writes OUT/sweep.json, OUT/sweep.md and
    OUT/rate_distortion.png (size in MB, log scale, against PSNR and LPIPS-VGG)."""
    from splatdistill.compress.outputs import check_outputs, preflight
    from splatdistill.compress.pipeline import compress_model
    from splatdistill.device import pick_device
    from splatdistill.formats.io import size_on_disk

    cfg = cfg or CompressConfig()
    out = Path(out_dir)

    scene = load_input(model_path)
    cfg.settings(scene.sh_degree)  # fail early on bad flags
    check_outputs(out, ["sweep.json", "sweep.md", "rate_distortion.png"])
    for name, c in sweep_settings(cfg):  # every run's output folder and writers, before any work
        st = c.settings(scene.sh_degree)
        preflight(scene, out / name, st, pruned_count(len(scene), st["prune"]), c.write_spz, VQ_POINTS_PER_CODEWORD)
    targets = prepare_targets(scene, data, cfg, pick_device(cfg.device))
    rows = []
    for name, c in sweep_settings(cfg):
        summ = compress_model(model_path, out / name, data, c, scene=scene, targets=targets)
        s = summ["settings"]
        rows.append(
            {
                "name": name,
                "output_bytes": summ["output_bytes"],
                "mb": summ["output_bytes"] / 1e6,
                "ratio": summ["ratio"],
                "num_gaussians": summ["num_gaussians"],
                "psnr": summ["psnr"],
                "ssim": summ["ssim"],
                "lpips_vgg": summ["lpips_vgg"],
                "prune": s["prune"],
                "sh_degree": s["sh_degree"],
                "vq_size": s["vq_size"],
                "vq_ratio": s["vq_ratio"],
                "seconds": summ["timings_s"]["total"],
            }
        )
    result = {
        "input": str(model_path),
        "input_bytes": size_on_disk(model_path),
        "mode": targets.mode,
        "evaluated_on": f"{len(targets.eval_cams)} {targets.eval_kind}",
        "runs": rows,
    }
    write_json_atomic(out / "sweep.json", result)
    write_bytes_atomic(out / "sweep.md", sweep_markdown(result).encode())
    plot_rate_distortion(rows, out / "rate_distortion.png", title=Path(model_path).name)
    return result


def sweep_markdown(result: dict) -> str:
    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = [
        f"# Compression sweep: {Path(result['input']).name}",
        "",
        f"Input {result['input_bytes'] / 1e6:.2f} MB; metrics on {result['evaluated_on']}.",
        "",
        "| run | prune | SH | VQ K | VQ R | Gaussians | MB | ratio | PSNR | SSIM | LPIPS-VGG | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['name']} | {r['prune']:.2f} | {r['sh_degree']} | {r['vq_size']} | {r['vq_ratio']:.2f} | "
            f"{r['num_gaussians']} | {r['mb']:.3f} | {r['ratio']:.1f} | {f(r['psnr'], '.2f')} | "
            f"{f(r['ssim'], '.4f')} | {f(r['lpips_vgg'], '.4f')} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def minor_label(x: float, pos=None) -> str:
    """Minor log-axis ticks: label 2, 3 and 5 times a power of ten only (the rest would collide)."""
    if x <= 0:
        return ""
    lead = x / 10 ** math.floor(math.log10(x) + 1e-9)
    return f"{x:g}" if round(lead) in (2, 3, 5) and abs(lead - round(lead)) < 1e-6 else ""


def plot_rate_distortion(rows: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((a1, "psnr", "PSNR (dB)"), (a2, "lpips_vgg", "LPIPS-VGG (lower is better)")):
        pts = [(r["mb"], r[key], r["name"]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FuncFormatter(minor_label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("size (MB)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"rate-distortion {title}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
