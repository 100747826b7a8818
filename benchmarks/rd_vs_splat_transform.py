"""Rate-distortion against PlayCanvas splat-transform, side by side in one run.

    PYTHONPATH=src python benchmarks/rd_vs_splat_transform.py MODEL.ply [MODEL.ply ...]
        [--out benchmarks/out/rd_vs_st] [--sh-variants] [--views 8] [--resolution 192]
        [--point LABEL:KEY=VALUE,...] [--equal-quality] [--no-sog | --sog-timeout S]

For every model: splat-transform (installed from npm into ``benchmarks/out/node_cache`` on first
use; skipped with a message when node / npm are missing) writes SPZ, SOG (``-g cpu``),
compressed PLY, and SPZ trimmed with its own ``-H`` (our SH degree) and ``-F`` (pairwise merging
down to our Gaussian count) for each of our presets; every output is converted back to a plain
PLY by splat-transform and read here. Ours: training-free ``compress`` at the three presets
(``model.sdz``, decoded). Everything is rendered from the same held-out orbit cameras as the
original model and compared with the original's renders (PSNR, SSIM, LPIPS-VGG). Prints a
Markdown table and writes ``rd.json``, ``rd.md`` and ``rd.png`` (bytes against PSNR, log scale).
``--sh-variants`` adds the model truncated to SH 1 and 2 (``with_sh_degree``) as further models.

``--point LABEL:KEY=VALUE,...`` (repeatable) adds a training-free run with those ``CompressConfig``
fields (``sh_degree=input`` keeps the input's degree), e.g. the top of the curve:
``--point p0:quality=high,prune=0,sh_degree=input,rotation_bits=10``.

The goal line checks, per model and per splat-transform output, whether one of our outputs of no
more bytes is at least 1 dB better in at most 5x splat-transform's time (and shows the best such
output; where none is, our best PSNR at no more bytes).

``--equal-quality`` measures ``.sdz`` against ``.spz`` at the same quality: for each run of ours, the
same reduced Gaussians are encoded again with coarser packed-codec settings (``KNOBS``: SH-palette
share, position / rotation / opacity bits, scalar-codebook levels; searched by ``equal_quality``);
the smallest ``.sdz`` whose PSNR is at least that run's ``.spz``'s is reported with its byte ratio.
``--sog-timeout`` bounds splat-transform's SOG runs, ``--sog-models`` limits them to some models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "out" / "node_cache"
PACKAGE = "@playcanvas/splat-transform"


def splat_transform_cli() -> list[str] | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        print("rd_vs_splat_transform: node/npm not found: splat-transform rows skipped", file=sys.stderr)
        return None
    cli = CACHE / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
    if not cli.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(CACHE), PACKAGE], capture_output=True, text=True)
        if r.returncode != 0 or not cli.exists():
            print(
                f"rd_vs_splat_transform: npm install {PACKAGE} failed: splat-transform rows skipped\n{r.stderr[-500:]}",
                file=sys.stderr,
            )
            return None
    return [node, str(cli)]


def run_st(cli, args, timeout=1800) -> float:
    # -F (decimation) runs on a WebGPU adapter; without a GPU, Mesa's software Vulkan driver (lavapipe,
    # Mesa >= 23) serves as one. Its loader wants XDG_RUNTIME_DIR, which a bare shell may not set.
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    t0 = time.perf_counter()
    r = subprocess.run(
        cli + ["-q", "-w"] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if r.returncode != 0:
        hint = ""
        if "-F" in map(str, args) and "adapter" in (r.stderr + r.stdout).lower():
            hint = " (-F needs a WebGPU adapter: a GPU, or Mesa's lavapipe >= 23 on a CPU-only machine)"
        raise RuntimeError(f"splat-transform {' '.join(map(str, args))} failed{hint}: {r.stderr[-800:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "rd_vs_st")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=192)
    ap.add_argument("--sh-variants", action="store_true")
    ap.add_argument("--presets", default="high,balanced,small")
    ap.add_argument("--no-sog", action="store_true")
    ap.add_argument("--sog-timeout", type=float, default=1800, help="seconds before a SOG run is given up")
    ap.add_argument("--sog-models", default=None, help="comma-separated model names to run SOG on (default: all)")
    ap.add_argument("--point", action="append", default=[], help="LABEL:KEY=VALUE,... an extra training-free run")
    ap.add_argument("--equal-quality", action="store_true", help="smallest .sdz at the .spz's PSNR, per preset")
    ap.add_argument(
        "--tables-only",
        action="store_true",
        help="recompute the goal, tables and plot from OUT/rd.json's measured rows (no new runs)",
    )
    a = ap.parse_args(argv)
    if a.tables_only:
        return write_tables(a.out, json.loads((a.out / "rd.json").read_text()))
    if not a.models:
        ap.error("give at least one model (or --tables-only)")

    from splatdistill.cameras.camera import stack_cameras
    from splatdistill.compress.pipeline import CompressConfig, sample_cameras
    from splatdistill.formats.io import load_model
    from splatdistill.formats.ply import write_ply
    from splatdistill.ops.lpips import LPIPSBank
    from splatdistill.ops.metrics import image_metrics
    from splatdistill.render import render

    a.out.mkdir(parents=True, exist_ok=True)
    cli = splat_transform_cli()
    bank = LPIPSBank()
    models = []
    for m in a.models:
        scene = load_model(m)
        models.append((m.stem, m, scene))
        if a.sh_variants:
            for d in range(1, scene.sh_degree):
                p = a.out / f"{m.stem}_sh{d}.ply"
                write_ply(scene.with_sh_degree(d), p)
                models.append((p.stem, p, scene.with_sh_degree(d)))

    all_rows, eq_rows = [], []
    for name, path, scene in models:
        work = a.out / name
        work.mkdir(exist_ok=True)
        cfg = CompressConfig(eval_views=a.views, resolution=a.resolution, lpips=False, progress=False)
        _, cams, _ = sample_cameras(scene, cfg)
        with torch.no_grad():
            refs = [render(scene, stack_cameras([c], "cpu")).rgb[0].clamp(0, 1) for c in cams]

        def score(s, cams=cams, refs=refs):
            per = []
            for c, ref in zip(cams, refs):
                with torch.no_grad():
                    img = render(s, stack_cameras([c], "cpu")).rgb[0].clamp(0, 1)
                per.append(image_metrics(img, ref, ("vgg",), lpips_bank=bank))
            return {
                k: float(np.mean([p[k] for p in per])) if all(p.get(k) is not None for p in per) else None
                for k in ("psnr", "ssim", "lpips_vgg")
            }

        rows = []
        ours = {}
        runs = [(p, {"quality": p}) for p in a.presets.split(",")] + [parse_point(p, scene) for p in a.point]
        for preset, kw in runs:
            r_sdz, r_spz, dec = run_ours(path, work / f"ours_{preset}", name, preset, kw, score)
            if preset in a.presets.split(","):
                ours[preset] = (len(dec), dec.sh_degree)
            rows += [r for r in (r_sdz, r_spz) if r is not None]
            if a.equal_quality and r_spz is not None:
                eq_rows.append(equal_quality(path, work, name, preset, kw, r_sdz, r_spz, score))
        if cli is not None:
            outs = [("spz", "st.spz", []), ("compressed ply", "st.compressed.ply", [])]
            if not a.no_sog and (a.sog_models is None or name in a.sog_models.split(",")):
                outs.append(("sog", "st.sog", ["-g", "cpu"]))
            for preset, (n_g, deg) in ours.items():
                outs.append((f"spz -H {deg} -F {n_g} ({preset})", f"st_{preset}.spz", ["-H", deg, "-F", n_g]))
            for label, fname, acts in outs:
                dst = work / fname
                try:
                    pre = [
                        a_ for a_ in acts if a_ in ("-g",) or (acts.index(a_) > 0 and acts[acts.index(a_) - 1] == "-g")
                    ]
                    post = [a_ for a_ in acts if a_ not in pre]
                    tmo = a.sog_timeout if label == "sog" else 1800
                    sec = run_st(cli, pre + [path] + post + [dst], timeout=tmo)
                    back = work / (fname + ".back.ply")
                    run_st(cli, [dst, back])
                    dec = read_back_ply(back)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"rd_vs_splat_transform: {name} {label}: {e}", file=sys.stderr)
                    continue
                rows.append(
                    {
                        "model": name,
                        "tool": "splat-transform",
                        "output": label,
                        "bytes": dst.stat().st_size,
                        "gaussians": len(dec),
                        "sh": dec.sh_degree,
                        "seconds": sec,
                        **score(dec),
                    }
                )
        for r in rows:
            print(
                f"{r['model']:>16} {r['tool']:>15} {r['output']:>34} {r['bytes']:>10,} B {r['gaussians']:>8} "
                f"SH{r['sh']} {r['psnr']:6.2f} dB {r['ssim']:.4f} {r['lpips_vgg'] or float('nan'):.4f} "
                f"{r['seconds']:6.1f} s",
                flush=True,
            )
        all_rows += rows

    result = {
        "command": "python benchmarks/rd_vs_splat_transform.py " + " ".join(argv or sys.argv[1:]),
        "views": a.views,
        "resolution": a.resolution,
        "rows": all_rows,
        "equal_quality": eq_rows,
    }
    return write_tables(a.out, result)


def write_tables(out: Path, result: dict) -> int:
    """The goal check, ``rd.json``, ``rd.md`` and ``rd.png`` from a run's measured rows."""
    result["goal"] = goal_check(result["rows"])
    (out / "rd.json").write_text(json.dumps(result, indent=1))
    eq_rows = result.get("equal_quality") or []
    md = markdown(result["rows"], result["goal"]) + (equal_markdown(eq_rows) if eq_rows else "")
    (out / "rd.md").write_text(md)
    plot(result["rows"], out / "rd.png")
    print(md)
    return 0


# Coarser packed-codec settings tried one at a time from the preset's (--equal-quality): CompressConfig
# field -> values, finest first; "palette" is a share of the SH palette size the preset's run used.
KNOBS = {
    "palette": [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64],
    "position_bits": [15, 14, 13, 12, 11, 10, 9, 8],
    "codebook_levels": [128, 64, 32, 16, 8],
    "rotation_bits": [7, 6, 5, 4],
    "opacity_bits": [11, 10, 9, 8, 7, 6, 5],
}


def parse_point(spec: str, scene):
    """``LABEL:KEY=VALUE,...`` -> (label, CompressConfig keyword arguments)."""
    label, _, body = spec.partition(":")
    kw = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        if k == "sh_degree" and v == "input":
            kw[k] = scene.sh_degree
        elif k == "quality":
            kw[k] = v
        else:
            kw[k] = float(v) if "." in v else int(v)
    return label, kw


def run_ours(path, od, name, label, kw, score, spz=True):
    """One training-free ``compress`` run: its ``.sdz`` row, ``.spz`` row (or None) and decoded scene."""
    from splatdistill.compress.pipeline import CompressConfig, compress_model
    from splatdistill.formats.sdz import load_sdz

    t0 = time.perf_counter()
    summ = compress_model(path, od, None, CompressConfig(eval_views=0, progress=False, write_spz=spz, **kw))
    sec = time.perf_counter() - t0
    dec = load_sdz(od / "model.sdz")
    base = {"model": name, "tool": "ours", "seconds": sec}
    r_sdz = {
        **base,
        "output": f"sdz {label}",
        "bytes": summ["output_bytes"],
        "gaussians": len(dec),
        "sh": dec.sh_degree,
        **score(dec),
    }
    spz = read_spz_scene(od / "model.spz") if spz else None
    r_spz = None
    if spz is not None:
        r_spz = {
            **base,
            "output": f"spz {label}",
            "bytes": summ["spz_bytes"],
            "gaussians": len(spz),
            "sh": spz.sh_degree,
            **score(spz),
        }
    return r_sdz, r_spz, dec


def codec_kw(choice: dict, base_palette: int) -> dict:
    """CompressConfig fields of a knob choice (``KNOBS`` names; "palette" as a share)."""
    kw = {k: v for k, v in choice.items() if k != "palette"}
    if "palette" in choice:
        kw["palette_size"] = max(1, int(round(base_palette * choice["palette"])))
    return kw


def finer_values(codec: dict) -> dict:
    """Per knob, up to two values finer than the run's ``codec`` (``rotation_bits`` named as the flag;
    "palette" as a share of the run's palette): bits +1 and +2, scalar levels and palette x2 and x4,
    within the codec's maxima."""
    cap = {"position_bits": 16, "rotation_bits": 16, "opacity_bits": 16, "codebook_levels": 65536}
    out = {"palette": [4.0, 2.0]}
    for k, top in cap.items():
        base = codec[k]
        steps = [base * 2, base * 4] if k == "codebook_levels" else [base + 1, base + 2]
        out[k] = sorted({min(top, v) for v in steps} - {base}, reverse=True)  # none at the maximum
    return out


def equal_quality(path, work, name, label, kw, r_sdz, r_spz, score) -> dict:
    """The smallest ``.sdz`` of the same reduced Gaussians (same prune / SH / importance, another
    packed codec) whose PSNR is at least the ``.spz``'s.

    Each knob of ``KNOBS`` is first coarsened alone (one run per value, down to where it alone costs
    more squared error than any refinement could give back), and refined alone by up to two steps
    (``finer_values``), giving each value's added squared error (negative for a refinement) and
    bytes saved (negative too). The combination saving the most bytes whose added errors sum within
    the budget (the ``.spz``'s MSE less the default ``.sdz``'s; negative when the default starts
    below the ``.spz``, so that some knob must be refined) is then encoded for real; while the measured PSNR
    falls short, the budget is tightened by what the additive model missed and the search repeated; from the first combination
    that holds the PSNR, one knob at a time is coarsened further (the smallest file that still holds
    it, each round) until no step does."""
    import itertools

    from splatdistill.compress.config import CompressConfig
    from splatdistill.compress.trainingfree import codec_settings, run_palette_size

    # the run's own palette and codec (the preset's, or the point's flags), resolved as compress does
    run_cfg, run_s = CompressConfig(**kw), {"quality": kw.get("quality", "balanced")}
    base_pal = run_palette_size(run_s, run_cfg, r_sdz["gaussians"])
    run_codec = codec_settings(run_s, run_cfg)
    run_codec["rotation_bits"] = run_codec.pop("quat_bits")  # encode_packed's name -> the flag's
    run_value = {**run_codec, "palette": 1.0}
    refine = finer_values(run_codec)
    mse = lambda p: 10 ** (-p / 10)  # noqa: E731 - images in [0, 1]
    budget = mse(r_spz["psnr"]) - mse(r_sdz["psnr"])  # squared error the codec may add (< 0: must remove)
    tried, effect = [], {k: [(None, 0.0, 0)] for k in KNOBS}
    run_no = 0

    def trial(choice, spz=False):
        nonlocal run_no
        run_no += 1
        od = work / f"eq_{label}_{run_no}"
        r, _, _ = run_ours(path, od, name, label, {**kw, **codec_kw(choice, base_pal)}, score, spz=spz)
        lab = " ".join(f"{k}={v:g}" for k, v in choice.items()) or "default"
        tried.append({"codec": lab, "bytes": r["bytes"], "psnr": r["psnr"], "od": od})
        print(
            f"{name:>16} equal-quality {label:>9} {lab:>70} {r['bytes']:>9,} B {r['psnr']:6.2f} dB "
            f"(spz {r_spz['psnr']:.2f})",
            flush=True,
        )
        return tried[-1]

    for k, values in refine.items():
        for v in values:
            t = trial({k: v})
            effect[k].append((v, mse(t["psnr"]) - mse(r_sdz["psnr"]), r_sdz["bytes"] - t["bytes"]))
    gain = sum(max(0.0, -min(e[1] for e in eff)) for eff in effect.values())  # most error refinement removes
    for k, values in KNOBS.items():
        for v in values:
            if v >= run_value[k]:
                continue  # not a coarsening
            t = trial({k: v})
            err = mse(t["psnr"]) - mse(r_sdz["psnr"])
            effect[k].append((v, err, r_sdz["bytes"] - t["bytes"]))
            if err > budget + gain:
                break  # coarser values of this knob alone already miss the target
    best = None
    if r_sdz["psnr"] >= r_spz["psnr"]:
        best = {"codec": "default", "bytes": r_sdz["bytes"], "psnr": r_sdz["psnr"], "od": work / f"ours_{label}"}
    ladder = {k: sorted({*KNOBS[k], *refine[k], run_value[k]}, reverse=True) for k in KNOBS}
    limit, seen = budget, set()
    for _ in range(5):
        combos = []
        for combo in itertools.product(*effect.values()):
            err, saved = sum(c[1] for c in combo), sum(c[2] for c in combo)
            if err <= limit:
                combos.append((saved, err, combo))
        if not combos:
            break
        saved, predicted, combo = max(combos, key=lambda c: c[0])
        choice = {k: c[0] for k, c in zip(effect, combo) if c[0] is not None}
        key = tuple(sorted(choice.items()))
        if not choice or key in seen or (best is not None and saved <= 0):
            break
        seen.add(key)
        t = trial(choice, spz=True)
        if t["psnr"] >= r_spz["psnr"]:
            if best is None or t["bytes"] < best["bytes"]:
                best = t
            # then coarsen one knob at a time from there while the PSNR holds
            while True:
                steps = []
                for k in KNOBS:
                    cur = choice.get(k, run_value[k])
                    nxt = [v for v in ladder[k] if v < cur]
                    if nxt:
                        steps.append({**choice, k: nxt[0]})
                found = [(c, trial(c, spz=True)) for c in steps]
                found = [(c, t) for c, t in found if t["psnr"] >= r_spz["psnr"] and t["bytes"] < best["bytes"]]
                if not found:
                    break
                choice, best = min(found, key=lambda ct: ct[1]["bytes"])
            best["same_gaussians"] = (best["od"] / "model.spz").read_bytes() == (
                work / f"ours_{label}" / "model.spz"
            ).read_bytes()
            break
        # the errors did not add up: tighten the limit by what the model missed (and a little more)
        miss = mse(t["psnr"]) - mse(r_sdz["psnr"]) - predicted
        limit -= max(miss, 0.0) + 0.1 * max(abs(budget), abs(miss))
    for t in [*tried, *([best] if best else [])]:
        t["od"] = str(t["od"])
    if best is not None:
        best.setdefault("same_gaussians", True)
    return {
        "model": name,
        "preset": label,
        "spz_bytes": r_spz["bytes"],
        "spz_psnr": r_spz["psnr"],
        "sdz_default_bytes": r_sdz["bytes"],
        "sdz_default_psnr": r_sdz["psnr"],
        "tried": tried,
        "best": best,
        "ratio": None if best is None else best["bytes"] / r_spz["bytes"],
    }


def equal_markdown(eq) -> str:
    f = lambda v, s: "n/a" if v is None else format(v, s)  # noqa: E731
    lines = [
        "",
        "| model | preset | .spz bytes | .spz PSNR | .sdz default bytes / PSNR | smallest .sdz with PSNR ≥ .spz | "
        "its bytes | its PSNR | .sdz / .spz | same Gaussians |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for e in eq:
        b = e["best"] or {}
        lines.append(
            f"| {e['model']} | {e['preset']} | {e['spz_bytes']:,} | {e['spz_psnr']:.2f} | "
            f"{e['sdz_default_bytes']:,} / {e['sdz_default_psnr']:.2f} | {b.get('codec', 'none')} | "
            f"{f(b.get('bytes'), ',')} | {f(b.get('psnr'), '.2f')} | {f(e['ratio'], '.2f')} | "
            f"{'yes' if b.get('same_gaussians') else 'n/a' if not b else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def read_back_ply(path: Path):
    """A binary little-endian Inria PLY written by splat-transform. Its SPZ decoder writes
    opacity = +inf for alpha = 1 (logit of 1), which our strict reader rejects; such logits are
    clipped to +-20 (alpha within 2e-9 of 0 or 1) here."""
    from splatdistill.scene.gaussians import GaussianScene

    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise RuntimeError(f"{path}: not a binary little-endian PLY")
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4"}
    names, dtype, n = [], [], 0
    for line in header:
        t = line.split()
        if t[:2] == ["element", "vertex"]:
            n = int(t[2])
        elif t and t[0] == "property":
            names.append(t[2])
            dtype.append((t[2], types[t[1]]))
    v = np.frombuffer(data, dtype=np.dtype(dtype), count=n, offset=end)
    f = lambda *k: np.stack([v[x].astype(np.float32) for x in k], axis=1)  # noqa: E731
    rest = sorted((x for x in names if x.startswith("f_rest_")), key=lambda x: int(x[7:]))
    k1 = len(rest) // 3
    shn = f(*rest).reshape(n, 3, k1).transpose(0, 2, 1) if k1 else np.zeros((n, 0, 3), np.float32)
    op = np.clip(np.nan_to_num(v["opacity"].astype(np.float32), nan=0.0, posinf=20.0, neginf=-20.0), -20, 20)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return GaussianScene(
        t(f("x", "y", "z")),
        t(f("rot_0", "rot_1", "rot_2", "rot_3")),
        t(f("scale_0", "scale_1", "scale_2")),
        t(op),
        t(f("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :]),
        t(shn),
    )


def read_spz_scene(p: Path):
    from splatdistill.formats.io import load_model

    try:
        return load_model(p) if p.exists() else None
    except Exception:  # noqa: BLE001 - a row is skipped, not the benchmark
        return None


def goal_check(rows) -> list[dict]:
    """Per splat-transform row: the output of ours (sdz rows) of no more bytes that meets the goal
    (>= 1 dB better, <= 5x the time) with the best PSNR, else our best PSNR at no more bytes; its
    margin and time ratio."""
    out = []
    for st in (r for r in rows if r["tool"] == "splat-transform"):
        cands = [
            r
            for r in rows
            if r["tool"] == "ours"
            and r["model"] == st["model"]
            and r["output"].startswith("sdz")
            and r["bytes"] <= st["bytes"]
        ]
        meets = [r for r in cands if r["psnr"] - st["psnr"] >= 1.0 and r["seconds"] <= 5 * st["seconds"]]
        best = max(meets or cands, key=lambda r: r["psnr"], default=None)
        out.append(
            {
                "model": st["model"],
                "splat_transform": st["output"],
                "st_bytes": st["bytes"],
                "st_psnr": st["psnr"],
                "ours": None if best is None else best["output"],
                "ours_bytes": None if best is None else best["bytes"],
                "ours_psnr": None if best is None else best["psnr"],
                "margin_db": None if best is None else best["psnr"] - st["psnr"],
                "time_ratio": None if best is None else best["seconds"] / max(st["seconds"], 1e-9),
                "met": bool(
                    best is not None and best["psnr"] - st["psnr"] >= 1.0 and best["seconds"] <= 5 * st["seconds"]
                ),
            }
        )
    return out


def markdown(rows, goal) -> str:
    f = lambda v, s: "n/a" if v is None else format(v, s)  # noqa: E731
    lines = [
        "| model | tool | output | bytes | Gaussians | SH | PSNR | SSIM | LPIPS-VGG | s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['tool']} | {r['output']} | {r['bytes']:,} | {r['gaussians']:,} | {r['sh']} | "
            f"{f(r['psnr'], '.2f')} | {f(r['ssim'], '.4f')} | {f(r['lpips_vgg'], '.4f')} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "| model | splat-transform output | its bytes | its PSNR | ours (≤ bytes) | our bytes | our PSNR | "
        "margin dB | time ratio | ≥ 1 dB and ≤ 5× time |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for g in goal:
        lines.append(
            f"| {g['model']} | {g['splat_transform']} | {g['st_bytes']:,} | {f(g['st_psnr'], '.2f')} | "
            f"{g['ours'] or 'none'} | {f(g['ours_bytes'], ',')} | {f(g['ours_psnr'], '.2f')} | "
            f"{f(g['margin_db'], '+.2f')} | {f(g['time_ratio'], '.1f')} | {'yes' if g['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        for tool, mk in (("ours", "o"), ("splat-transform", "s")):
            pts = sorted(
                (r["bytes"] / 1e3, r["psnr"], r["output"]) for r in rows if r["model"] == m and r["tool"] == tool
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], mk, label=tool)
                for x, y, lab in pts:
                    ax.annotate(lab, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("kB")
        ax.set_ylabel("PSNR vs original (dB)")
        ax.set_title(m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
