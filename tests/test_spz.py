"""SPZ writer/reader: round trip within the format's precision, the coordinate convention, an
independent check against ``gsply`` (both directions, and its PLY -> SPZ path), corrupt inputs."""

from __future__ import annotations

import gzip
import math
import struct
from functools import partial

import numpy as np
import pytest
import torch

from helpers import assert_close, random_scene
from splatdistill.errors import UserError
from splatdistill.formats import spz
from splatdistill.formats.spz import read_spz, read_spz_header, write_spz
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.scene.sh import eval_sh

gsply = pytest.importorskip("gsply")

# ---- precision of each attribute (half a quantisation step, plus float32 slack) ------------------
EPS = 1e-5
ALPHA_TOL = 0.5 / 255 + 1e-6  # after sigmoid
COLOR_TOL = 0.5 / (0.15 * 255) + 1e-6  # sh0
SCALE_TOL = 0.5 / 16 + 1e-6  # log-scale
SH1_TOL = (8 / 2 + 0.5) / 128 + 1e-6  # degree 1: 5-bit buckets (8 byte values) + rounding
SHR_TOL = (16 / 2 + 0.5) / 128 + 1e-6  # degree 2, 3: 4-bit buckets (16 byte values)
ROT3_TOL = 3 * math.sqrt(2) * 0.5 * math.sqrt(0.5) / 511 + 1e-5  # per component, smallest-three
ROT2_TOL = 0.5 / 127.5 + 1e-6  # x, y, z of the w >= 0 quaternion


def pos_tol(frac_bits: int, extent: float) -> float:
    return 0.5 * 2.0**-frac_bits + 2 * extent * 2.0**-23  # + float32 rounding of the result


# uniform over (nearly) the whole range of each quantised attribute, positions far from the origin
make_scene = partial(
    random_scene,
    n=500,
    degree=3,
    seed=0,
    extent=100.0,
    quat_norms=(0.1, 3.0),
    log_scales=(-9.0, 5.0),
    opacity_std=3.0,
    sh0=3.2,
    shN=(-1.0, 0.95),
)


# ---- the RDF <-> RUB map, derived here independently of the module -------------------------------
F = np.diag([1.0, -1.0, -1.0])


def sh_signs(k_rest: int) -> np.ndarray:
    """Sign of each SH basis function under d -> F d, measured by evaluating the basis."""
    from splatdistill.scene.sh import sh_basis

    d = torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64)
    y = sh_basis(3, d)[0, 1:]
    yf = sh_basis(3, d @ torch.as_tensor(F))[0, 1:]
    ratio = (yf / y).numpy()
    assert np.allclose(np.abs(ratio), 1.0)
    return np.sign(ratio)[:k_rest]


def flipped(arrays: dict) -> dict:
    out = dict(arrays)
    out["means"] = arrays["means"] @ F
    q = arrays["quats"].copy()
    q[:, 2:] *= -1
    out["quats"] = q
    out["shN"] = arrays["shN"] * sh_signs(arrays["shN"].shape[1])[None, :, None]
    return out


def arrays_of(scene: GaussianScene) -> dict:
    a = {k: v.detach().double().numpy() for k, v in scene.items()}
    a["sh0"] = a["sh0"].reshape(-1, 3)
    return a


def arrays_of_gsdata(d) -> dict:
    n = d.means.shape[0]
    shN = np.zeros((n, 0, 3)) if d.shN is None else np.asarray(d.shN, dtype=np.float64)
    return {
        "means": np.asarray(d.means, np.float64),
        "quats": np.asarray(d.quats, np.float64),
        "scales": np.asarray(d.scales, np.float64),
        "opacities": np.asarray(d.opacities, np.float64).reshape(n),
        "sh0": np.asarray(d.sh0, np.float64).reshape(n, 3),
        "shN": shN,
    }


def to_gsdata(a: dict):
    return gsply.GSData.from_arrays(
        means=a["means"].astype(np.float32),
        scales=a["scales"].astype(np.float32),
        quats=a["quats"].astype(np.float32),
        opacities=a["opacities"].astype(np.float32),
        sh0=a["sh0"].astype(np.float32),
        shN=a["shN"].astype(np.float32) if a["shN"].shape[1] else None,
        format="ply",
    )


def unit_quats(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def assert_spz_close(got: dict, want: dict, *, frac_bits=12, extent=100.0, version=3, sh_tol=None, extra=0.0):
    """``got`` decodes an SPZ made from ``want``: every attribute within the format's precision
    (``extra`` widens each bound by that many quantisation steps, for comparing two encoders)."""
    n = want["means"].shape[0]
    assert got["means"].shape == (n, 3)
    step = 1 + 2 * extra  # half-steps
    np.testing.assert_array_less(np.abs(got["means"] - want["means"]), step * pos_tol(frac_bits, extent))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_array_less(np.abs(sig(got["opacities"]) - sig(want["opacities"])), step * ALPHA_TOL)
    np.testing.assert_array_less(np.abs(got["sh0"] - want["sh0"]), step * COLOR_TOL)
    np.testing.assert_array_less(np.abs(got["scales"] - want["scales"]), step * SCALE_TOL)
    k = want["shN"].shape[1]
    assert got["shN"].shape == (n, k, 3)
    if k:
        tol = np.full(k, SHR_TOL)
        tol[:3] = SH1_TOL
        if sh_tol is not None:
            tol = np.full(k, sh_tol)
        err = np.abs(got["shN"] - want["shN"])
        np.testing.assert_array_less(err, np.broadcast_to(tol[None, :, None] + extra / 128, err.shape))
    # rotations, compared as rotations: q and -q are the same one
    qw = unit_quats(want["quats"])
    qg = got["quats"]
    if version >= 3:
        err = np.minimum(np.abs(qg - qw).max(axis=1), np.abs(qg + qw).max(axis=1))
        assert err.max() < step * ROT3_TOL, err.max()
        angle = 2 * np.arccos(np.clip(np.abs((unit_quats(qg) * qw).sum(axis=1)), 0, 1))
        assert angle.max() < 0.01 * step
    else:
        canon = qw * np.where(qw[:, :1] < 0, -1.0, 1.0)
        gcanon = qg * np.where(qg[:, :1] < 0, -1.0, 1.0)
        np.testing.assert_array_less(np.abs(gcanon[:, 1:] - canon[:, 1:]), step * ROT2_TOL)
        np.testing.assert_allclose(gcanon[:, 0], np.sqrt(np.maximum(0, 1 - (gcanon[:, 1:] ** 2).sum(1))), atol=1e-5)


# ================================================================================================
# round trip through our writer and reader
# ================================================================================================
@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_within_precision(tmp_path, degree, version):
    scene = make_scene(degree=degree, seed=degree)
    path = tmp_path / "s.spz"
    write_spz(scene, path, version=version)
    back = read_spz(path)
    assert len(back) == len(scene) and back.sh_degree == degree
    assert back.means.dtype == torch.float32
    assert_spz_close(arrays_of(back), arrays_of(scene), version=version)
    h = read_spz_header(path)
    assert (h.version, h.num_points, h.sh_degree, h.fractional_bits) == (version, 500, degree, 12)


@pytest.mark.parametrize("frac_bits", [8, 16, 20])
def test_round_trip_fractional_bits(tmp_path, frac_bits):
    extent = 0.9 * 2.0 ** (23 - frac_bits)
    scene = make_scene(degree=1, extent=extent)
    write_spz(scene, tmp_path / "s.spz", fractional_bits=frac_bits)
    back = read_spz(tmp_path / "s.spz")
    assert_spz_close(arrays_of(back), arrays_of(scene), frac_bits=frac_bits, extent=extent)


def test_header_layout_and_sh_buckets(tmp_path):
    scene = make_scene(n=300, degree=3)
    write_spz(scene, tmp_path / "s.spz", antialiased=True, version=3)
    raw = gzip.decompress((tmp_path / "s.spz").read_bytes())
    magic, version, n, deg, fb, flags, reserved = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, n, deg, fb, flags, reserved) == (0x5053474E, 3, 300, 3, 12, 1, 0)
    assert raw[:4] == b"NGSP"
    assert len(raw) == 16 + 300 * (9 + 1 + 3 + 3 + 4 + 45)
    assert read_spz_header(tmp_path / "s.spz").antialiased
    sh = np.frombuffer(raw, np.uint8, offset=16 + 300 * 20).reshape(300, 15, 3).astype(int)
    # spec: 5 bits for degree 1 (multiples of 8), 4 bits above (multiples of 16); 255 is the clamp
    assert np.all((sh[:, :3] % 8 == 0) | (sh[:, :3] == 255))
    assert np.all((sh[:, 3:] % 16 == 0) | (sh[:, 3:] == 255))
    assert len(np.unique(sh[:, :3])) > 16  # and not coarser than that


@pytest.mark.parametrize("degree", [0, 3])
def test_version4_layout(tmp_path, degree):
    """The 32-byte NGSP header, the table of contents and one zstd stream per non-empty attribute,
    holding the same bytes as the version-3 gzip payload."""
    import zstandard

    scene = make_scene(n=300, degree=degree)
    scene.antialiased = True
    write_spz(scene, tmp_path / "v4.spz")  # version 4 is the default
    write_spz(scene, tmp_path / "v3.spz", version=3)
    data = (tmp_path / "v4.spz").read_bytes()
    magic, version, n, deg, fb, flags, nstreams, toc = struct.unpack_from("<IIIBBBBI", data)
    assert (magic, version, n, deg, fb, flags, toc) == (0x5053474E, 4, 300, degree, 12, 1, 32)
    assert data[20:32] == bytes(12)
    sizes = [300 * 9, 300, 900, 900, 1200] + ([300 * 45] if degree else [])
    assert nstreams == len(sizes)
    off = 32 + 16 * nstreams
    legacy = gzip.decompress((tmp_path / "v3.spz").read_bytes())[16:]
    streams = []
    for i in range(nstreams):
        csize, usize = struct.unpack_from("<QQ", data, 32 + 16 * i)
        assert usize == sizes[i]
        streams.append(zstandard.ZstdDecompressor().decompress(data[off : off + csize], max_output_size=usize))
        off += csize
    assert off == len(data)
    assert b"".join(streams) == legacy
    h = read_spz_header(tmp_path / "v4.spz")
    assert (h.version, h.antialiased) == (4, True)
    assert read_spz(tmp_path / "v4.spz").antialiased and read_spz(tmp_path / "v3.spz").antialiased


def test_version1_float16_positions(tmp_path):
    """Version 1 (never released) stores positions as 3 float16; the rest as version 2."""
    scene = make_scene(n=50, degree=1, extent=10.0)
    raw = bytearray(gzip.decompress(spz.encode_spz(scene, version=2)))
    n = 50
    means = spz.frame_flip(scene.means.double().numpy().copy(), np.zeros((n, 4)), np.zeros((n, 3, 3)))[0]
    half = means.astype("<f2").tobytes()
    body = bytes(raw[16 + 9 * n :])
    struct.pack_into("<I", raw, 4, 1)
    (tmp_path / "v1.spz").write_bytes(gzip.compress(bytes(raw[:16]) + half + body))
    back = read_spz(tmp_path / "v1.spz")
    want = arrays_of(scene)
    assert_close(back.means, want["means"], rtol=1e-5, atol=10 * 2.0**-11, what="means")
    assert_close(back.scales, want["scales"], rtol=1e-5, atol=SCALE_TOL, what="scales")


def _ext_record(etype: int, payload: bytes) -> bytes:
    return struct.pack("<II", etype, len(payload)) + payload


def test_extensions(tmp_path, capsys):
    """Extension records (v4: between header and TOC; v3: after the SH): the coordinate-system
    extension decides the frame, the orbit-camera one is skipped quietly, unknown ones warned of."""
    scene = make_scene(n=40, degree=1)
    want = arrays_of(scene)
    v4 = spz.encode_spz(scene)
    v4_raw = spz.encode_spz(scene, convert_frame=False)  # the PLY (RDF) frame on disk

    def with_ext(data: bytes, ext: bytes) -> bytes:
        b = bytearray(data[:32])
        b[14] |= 2
        struct.pack_into("<I", b, 16, 32 + len(ext))
        return bytes(b) + ext + data[32:]

    rdf = _ext_record(0xADBE0003, struct.pack("<I", 6))
    rub = _ext_record(0xADBE0003, struct.pack("<I", 4))
    orbit = _ext_record(0xADBE0002, bytes(12))
    for name, data, ext in [("rdf", v4_raw, orbit + rdf), ("rub", v4, rub)]:
        (tmp_path / f"{name}.spz").write_bytes(with_ext(data, ext))
        assert_spz_close(arrays_of(read_spz(tmp_path / f"{name}.spz")), want, version=4)
    assert capsys.readouterr().err == ""
    (tmp_path / "unk.spz").write_bytes(with_ext(v4, _ext_record(0x12340001, b"abcd")))
    assert_spz_close(arrays_of(read_spz(tmp_path / "unk.spz")), want, version=4)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splatdistill: warning: ") and "0x12340001" in err[0]
    (tmp_path / "luf.spz").write_bytes(with_ext(v4, _ext_record(0xADBE0003, struct.pack("<I", 7))))
    _raises(tmp_path / "luf.spz", "LUF")
    (tmp_path / "cut.spz").write_bytes(with_ext(v4, struct.pack("<II", 0x12340001, 99)))
    _raises(tmp_path / "cut.spz", "extension")
    # version 3: the records follow the SH array in the gzip stream
    raw = bytearray(gzip.decompress(spz.encode_spz(scene, version=3, convert_frame=False)))
    raw[14] |= 2
    (tmp_path / "v3.spz").write_bytes(gzip.compress(bytes(raw) + rdf))
    assert_spz_close(arrays_of(read_spz(tmp_path / "v3.spz")), want, version=3)


def test_edge_values(tmp_path):
    n = 6
    scene = GaussianScene(
        means=torch.zeros(n, 3),
        quats=torch.tensor(
            [
                [0.0, 0, 0, 0],
                [1, 0, 0, 0],
                [-1, 0, 0, 0],
                [0, 0, 0, 1],
                [0.5, 0.5, 0.5, 0.5],
                [0, -0.7071068, 0.7071068, 0],
            ]
        ),
        scales=torch.tensor([-20.0, 20.0, 0.0]).repeat(n, 1),
        opacities=torch.tensor([-40.0, 40.0, 0.0, 1.0, -1.0, 5.0]),
        sh0=torch.zeros(n, 1, 3),
        shN=torch.zeros(n, 3, 3),
    )
    for version in (2, 3, 4):
        write_spz(scene, tmp_path / "e.spz", version=version)
        back = read_spz(tmp_path / "e.spz")
        for _, v in back.items():
            assert torch.isfinite(v).all()
        # zero quaternion -> identity (version 2 has no exact 0: its bytes step 1/127.5 from -1)
        assert back.quats[0].tolist() == pytest.approx([1, 0, 0, 0], abs=0.5 / 127.5 + 1e-6 if version == 2 else 1e-6)
        assert back.scales[0].tolist() == pytest.approx([-10, 255 / 16 - 10, 0])  # clamped range
        assert torch.sigmoid(back.opacities[0]) < 1 / 255 and torch.sigmoid(back.opacities[1]) > 254 / 255
        # re-encoding the decoded scene gives the same bytes (the decoder is a right inverse)
        b1 = (tmp_path / "e.spz").read_bytes()
        write_spz(back, tmp_path / "e2.spz", version=version)
        assert (tmp_path / "e2.spz").read_bytes() == b1


def test_empty_scene_and_determinism(tmp_path):
    empty = make_scene(n=5, degree=2)[torch.zeros(5, dtype=torch.bool)]
    write_spz(empty, tmp_path / "e.spz")
    back = read_spz(tmp_path / "e.spz")
    assert len(back) == 0 and back.sh_degree == 2
    scene = make_scene(n=50)
    write_spz(scene, tmp_path / "a.spz")
    write_spz(scene, tmp_path / "b.spz")
    assert (tmp_path / "a.spz").read_bytes() == (tmp_path / "b.spz").read_bytes()
    # writing leaves the scene alone, also when its tensors are float64 (no float copy needed)
    s64 = scene.map(lambda t: t.double())
    before = s64.clone()
    write_spz(s64, tmp_path / "c.spz")
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(s64.items(), before.items()))
    assert (tmp_path / "c.spz").read_bytes() == (tmp_path / "a.spz").read_bytes()


# ================================================================================================
# the coordinate convention
# ================================================================================================
def test_frame_conversion_is_the_rdf_rub_rotation():
    """The module's flip is the rotation F (180° about x) applied to geometry and view-dependent
    colour: F-rotated means, F R F rotations, and SH with c'(F d) = c(d)."""
    s = make_scene(n=64, degree=3, seed=5)
    a = arrays_of(s)
    m, q, sh = spz.frame_flip(a["means"].copy(), a["quats"].copy(), a["shN"].copy())
    np.testing.assert_allclose(m, a["means"] @ F.T)

    def rotmat(qs):
        w, x, y, z = unit_quats(qs).T
        return np.stack(
            [
                np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
            ],
            -2,
        )

    np.testing.assert_allclose(rotmat(q), F @ rotmat(a["quats"]) @ F, atol=1e-12)
    d = torch.randn(64, 3, dtype=torch.float64)
    coeffs = torch.cat([torch.as_tensor(a["sh0"])[:, None], torch.as_tensor(a["shN"])], 1)
    coeffs_f = torch.cat([torch.as_tensor(a["sh0"])[:, None], torch.as_tensor(sh)], 1)
    np.testing.assert_allclose(
        eval_sh(3, coeffs_f, d @ torch.as_tensor(F).T).numpy(), eval_sh(3, coeffs, d).numpy(), atol=1e-12
    )
    np.testing.assert_array_equal(spz.SH_SIGNS_RDF_RUB, sh_signs(15))


def test_file_is_stored_in_rub(tmp_path):
    scene = make_scene(degree=3, seed=7)
    write_spz(scene, tmp_path / "s.spz")
    raw = read_spz(tmp_path / "s.spz", convert_frame=False)  # the file's own (RUB) values
    assert_spz_close(arrays_of(raw), flipped(arrays_of(scene)))
    write_spz(scene, tmp_path / "u.spz", convert_frame=False)
    assert_spz_close(arrays_of(read_spz(tmp_path / "u.spz", convert_frame=False)), arrays_of(scene))


# ================================================================================================
# independent check with gsply
# ================================================================================================
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_gsply_reads_our_files(tmp_path, degree, version):
    """gsply applies no frame conversion to SPZ: it sees the file's RUB values, i.e. our scene
    rotated by F; with ``convert_frame=False`` it sees our scene as is."""
    scene = make_scene(degree=degree, seed=10 + degree)
    write_spz(scene, tmp_path / "s.spz", version=version)
    d = gsply.read_spz(tmp_path / "s.spz")
    assert d.means.shape[0] == len(scene)
    assert_spz_close(arrays_of_gsdata(d), flipped(arrays_of(scene)), version=version)

    write_spz(scene, tmp_path / "u.spz", version=version, convert_frame=False)
    assert_spz_close(arrays_of_gsdata(gsply.read_spz(tmp_path / "u.spz")), arrays_of(scene), version=version)


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_we_read_gsply_files(tmp_path, degree, version):
    a = arrays_of(make_scene(degree=degree, seed=20 + degree))
    gsply.write_spz(tmp_path / "g.spz", to_gsdata(a), version=version)
    assert read_spz_header(tmp_path / "g.spz").version == version
    ours = read_spz(tmp_path / "g.spz", convert_frame=False)
    assert len(ours) == a["means"].shape[0]
    # gsply does not snap SH to the spec's 5/4-bit buckets: its SH bytes are within plain rounding
    assert_spz_close(arrays_of(ours), a, sh_tol=0.5 / 128 + 1e-6)
    assert_spz_close(arrays_of(read_spz(tmp_path / "g.spz")), flipped(a), sh_tol=0.5 / 128 + 1e-6)
    # the two decoders agree on the same bytes
    theirs = arrays_of_gsdata(gsply.read_spz(tmp_path / "g.spz"))
    mine = arrays_of(ours)
    for k in ("means", "scales", "sh0", "shN"):
        np.testing.assert_allclose(mine[k], theirs[k], atol=2e-5, err_msg=k)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(sig(mine["opacities"]), sig(theirs["opacities"]), atol=1e-3)
    np.testing.assert_allclose(mine["quats"], theirs["quats"], atol=2e-5)


def test_we_read_gsply_version_2(tmp_path):
    """gsply writes only versions 3 and 4, so check version 2 the other way: gsply's decoder and
    ours agree on a version-2 file we write (and gsply_reads_our_files checks it against the
    scene)."""
    a = arrays_of(make_scene(degree=1, seed=30))
    write_spz(
        GaussianScene(
            **{k: torch.as_tensor(v.reshape(-1, 1, 3) if k == "sh0" else v, dtype=torch.float32) for k, v in a.items()}
        ),
        tmp_path / "v2.spz",
        version=2,
        convert_frame=False,
    )
    theirs = arrays_of_gsdata(gsply.read_spz(tmp_path / "v2.spz"))
    mine = arrays_of(read_spz(tmp_path / "v2.spz", convert_frame=False))
    np.testing.assert_allclose(mine["quats"], theirs["quats"], atol=2e-5)
    np.testing.assert_allclose(mine["means"], theirs["means"], atol=2e-5)


def _write_inria_ply(path, a: dict) -> None:
    """The Inria 3DGS PLY layout (f_rest channel-major), written with plyfile."""
    from plyfile import PlyData, PlyElement

    n, k = a["shN"].shape[:2]
    cols = {"x": a["means"][:, 0], "y": a["means"][:, 1], "z": a["means"][:, 2]}
    cols.update({f"n{c}": np.zeros(n) for c in "xyz"})
    cols.update({f"f_dc_{c}": a["sh0"][:, c] for c in range(3)})
    rest = a["shN"].transpose(0, 2, 1).reshape(n, 3 * k)  # shN[:, j, c] = f_rest_{c*k + j}
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(3 * k)})
    cols["opacity"] = a["opacities"]
    cols.update({f"scale_{i}": a["scales"][:, i] for i in range(3)})
    cols.update({f"rot_{i}": a["quats"][:, i] for i in range(4)})
    arr = np.empty(n, dtype=[(name, "<f4") for name in cols])
    for name, v in cols.items():
        arr[name] = v
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


def test_ply_to_spz_compared_with_gsply(tmp_path):
    """An Inria PLY converted to SPZ by gsply (plyread + write_spz) and by us (the same values +
    write_spz): the two files hold the same Gaussians, ours rotated by F into the spec's RUB frame
    (gsply does not convert), and ours reads back as the PLY's scene."""
    a = arrays_of(make_scene(degree=3, seed=40))
    a = {k: v.astype(np.float32).astype(np.float64) for k, v in a.items()}  # the PLY's float32 values
    _write_inria_ply(tmp_path / "s.ply", a)
    g = gsply.plyread(tmp_path / "s.ply")
    np.testing.assert_array_equal(np.asarray(g.shN), a["shN"])  # gsply agrees on the PLY layout
    gsply.write_spz(tmp_path / "gsply.spz", g)

    scene = GaussianScene(
        **{k: torch.as_tensor(v.reshape(-1, 1, 3) if k == "sh0" else v, dtype=torch.float32) for k, v in a.items()}
    )
    write_spz(scene, tmp_path / "ours.spz")

    theirs = arrays_of_gsdata(gsply.read_spz(tmp_path / "gsply.spz"))
    ours = arrays_of_gsdata(gsply.read_spz(tmp_path / "ours.spz"))
    # same quantised values up to F, one step apart at most (rounding ties, gsply's unbucketed SH)
    assert_spz_close(ours, flipped(theirs), extra=1.0)
    assert_spz_close(arrays_of(read_spz(tmp_path / "ours.spz")), a)
    # and with the conversion off, our file matches gsply's frame
    write_spz(scene, tmp_path / "ours_raw.spz", convert_frame=False)
    assert_spz_close(arrays_of_gsdata(gsply.read_spz(tmp_path / "ours_raw.spz")), theirs, extra=1.0)


# ================================================================================================
# corrupt inputs and bad arguments
# ================================================================================================
def _good_payload(n=20, degree=1, version=3) -> bytes:  # the gzip container
    return spz.encode_spz(make_scene(n=n, degree=degree), version=version)


def _raises(path, *fragments):
    with pytest.raises(UserError) as e:
        read_spz(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_truncated_gzip(tmp_path):
    data = _good_payload(n=400)
    for cut in (len(data) // 2, len(data) - 4, 12):
        p = tmp_path / f"t{cut}.spz"
        p.write_bytes(data[:cut])
        _raises(p)


def test_corrupt_gzip_body(tmp_path):
    data = bytearray(_good_payload(n=400))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c.spz").write_bytes(bytes(data))
    _raises(tmp_path / "c.spz", "corrupt")


def _with_header(tmp_path, name, **fields):
    raw = bytearray(gzip.decompress(_good_payload()))
    magic, version, n, deg, fb, flags, res = struct.unpack_from("<IIIBBBB", raw)
    vals = dict(magic=magic, version=version, n=n, deg=deg, fb=fb, flags=flags, res=res)
    vals.update(fields)
    struct.pack_into("<IIIBBBB", raw, 0, *vals.values())
    p = tmp_path / name
    p.write_bytes(gzip.compress(bytes(raw)))
    return p


def test_bad_magic(tmp_path):
    _raises(_with_header(tmp_path, "m.spz", magic=0x12345678), "magic")


@pytest.mark.parametrize("version", [0, 5, 7])
def test_unsupported_version(tmp_path, version):
    _raises(_with_header(tmp_path, "v.spz", version=version), f"version {version}")


def test_version4_corrupt(tmp_path):
    good = spz.encode_spz(make_scene(n=30, degree=1))
    cases = {
        "short": good[:20],
        "toc": good[:40],
        "cut": good[:-5],
        "extra": good + b"x",
        "v5": good[:4] + struct.pack("<I", 5) + good[8:],
        "n": good[:8] + struct.pack("<I", 31) + good[12:],
        "streams": good[:15] + bytes([5]) + good[16:],
        "zstd": good[: 32 + 6 * 16] + bytes(len(good) - 32 - 6 * 16),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.spz").write_bytes(data)
        _raises(tmp_path / f"{name}.spz")


def test_inconsistent_count(tmp_path):
    _raises(_with_header(tmp_path, "more.spz", n=21), "21 Gaussians")
    _raises(_with_header(tmp_path, "fewer.spz", n=19), "19 Gaussians")
    _raises(_with_header(tmp_path, "huge.spz", n=2**32 - 1), "Gaussians")
    _raises(_with_header(tmp_path, "deg.spz", deg=2), "Gaussians")  # wrong SH size per Gaussian


def test_other_header_problems(tmp_path):
    _raises(_with_header(tmp_path, "d4.spz", deg=4), "SH degree 4")
    _raises(_with_header(tmp_path, "fb.spz", fb=40), "fractionalBits")
    # the extensions flag with no room for a record: nothing to skip, the Gaussians read
    assert len(read_spz(_with_header(tmp_path, "ext.spz", flags=2))) == 20
    # unknown v2/v3 flags other than the extensions bit are harmless
    assert len(read_spz(_with_header(tmp_path, "aa.spz", flags=1))) == 20


def test_not_spz_files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "r.spz").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises(tmp_path / "r.spz", "not an SPZ file")
    (tmp_path / "e.spz").write_bytes(b"")
    _raises(tmp_path / "e.spz", "empty")
    (tmp_path / "g.spz").write_bytes(gzip.compress(b"hello"))
    _raises(tmp_path / "g.spz", "header")
    (tmp_path / "z.spz").write_bytes(gzip.compress(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()))
    _raises(tmp_path / "z.spz", "magic")
    (tmp_path / "ply.spz").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    _raises(tmp_path / "ply.spz", "not an SPZ file")
    (tmp_path / "v4.spz").write_bytes(struct.pack("<III", 0x5053474E, 4, 10) + bytes(20))
    _raises(tmp_path / "v4.spz", "truncated")
    _raises(tmp_path / "missing.spz", "no such file")
    _raises(tmp_path, "directory")


def test_writer_errors_and_atomicity(tmp_path):
    path = tmp_path / "out.spz"
    good = make_scene(n=10, degree=1)
    write_spz(good, path)
    before = path.read_bytes()
    far = good.clone()
    far.params["means"][3, 1] = 5000.0  # beyond 2^(23-12) = 2048: fewer fractional bits, a warning
    write_spz(far, tmp_path / "far.spz")
    assert read_spz_header(tmp_path / "far.spz").fractional_bits == 10
    assert_spz_close(arrays_of(read_spz(tmp_path / "far.spz")), arrays_of(far), frac_bits=10, extent=5000)
    too_far = good.clone()
    too_far.params["means"][0, 0] = 2.0**24
    with pytest.raises(UserError, match="2\\^23") as e:
        write_spz(too_far, path)
    assert str(path) in str(e.value)
    nan = good.clone()
    nan.params["scales"][0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        write_spz(nan, path)
    with pytest.raises(UserError, match="version"):
        write_spz(good, path, version=5)
    with pytest.raises(UserError, match="fractional_bits"):
        write_spz(good, path, fractional_bits=25)
    assert path.read_bytes() == before  # failed writes leave the old file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.spz", "out.spz"]  # no temp files
