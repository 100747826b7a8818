"""Building blocks of the .sdz container: Morton order, scalar quantisation, weighted k-means and
R-VQ, the checksummed container, and the scene codec (round trips within each attribute's
precision, corruption always a UserError)."""

from __future__ import annotations

import json
import struct
import time
import zlib

import numpy as np
import pytest
import torch
import zstandard

from helpers import clustered_scene
from splatdistill.errors import UserError
from splatdistill.formats import container as C
from splatdistill.formats.container import read_container, read_container_header, write_container
from splatdistill.formats.morton import (
    compact_bits,
    deinterleave,
    interleave,
    morton_codes,
    morton_order,
    spread_bits,
)
from splatdistill.formats.quantize import (
    dequantize,
    fp16_error_bound,
    from_fp16,
    quantization_error_bound,
    quantize,
    to_fp16,
)
from splatdistill.formats.sdz import (
    DEFAULT_BITS,
    build_color_vq,
    canonical_quats,
    color_features,
    decode_scene,
    encode_order,
    encode_scene,
    load_sdz,
    save_sdz,
)
from splatdistill.formats.vq import assign_nearest, residual_vq, rvq_decode, weighted_kmeans

F32_REL = 2.0**-23  # one float32 ulp, relative


# ---- Morton ---------------------------------------------------------------------------------------------
def test_spread_bits_matches_bitwise_reference():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 1 << 21, 200, dtype=np.uint64)
    got = spread_bits(v)
    for a, b in zip(v.tolist(), got.tolist()):
        ref = 0
        for i in range(21):
            ref |= ((a >> i) & 1) << (3 * i)
        assert b == ref


def test_interleave_round_trips_and_matches_the_bitwise_layout():
    rng = np.random.default_rng(2)
    c = rng.integers(0, 1 << 21, (500, 3), dtype=np.uint64)
    keys = interleave(c)
    np.testing.assert_array_equal(deinterleave(keys), c)
    np.testing.assert_array_equal(compact_bits(spread_bits(c[:, 0])), c[:, 0])
    for (x, y, z), k in zip(c[:20].tolist(), keys[:20].tolist()):
        ref = 0
        for i in range(21):
            ref |= ((x >> i) & 1) << (3 * i) | ((y >> i) & 1) << (3 * i + 1) | ((z >> i) & 1) << (3 * i + 2)
        assert k == ref


def test_morton_grid_order_is_z_order():
    # the 8 corners of a cube: with 1 bit per axis the code is x | y << 1 | z << 2
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=np.float32)
    shuffled = corners[[5, 2, 7, 0, 3, 6, 1, 4]]
    order = morton_order(shuffled, bits=1)
    np.testing.assert_array_equal(shuffled[order], corners)
    np.testing.assert_array_equal(morton_codes(corners, bits=1), np.arange(8, dtype=np.uint64))


def test_morton_is_a_local_permutation():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-10, 10, (20_000, 3)).astype(np.float32)
    order = morton_order(pts)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(len(pts)))
    step = lambda p: np.linalg.norm(np.diff(p, axis=0), axis=1).mean()  # noqa: E731
    morton_step, random_step = step(pts[order]), step(pts[rng.permutation(len(pts))])
    assert morton_step < 0.1 * random_step, (morton_step, random_step)
    # deterministic, and invariant to the input order (up to ties)
    np.testing.assert_array_equal(order, morton_order(pts))
    perm = rng.permutation(len(pts))
    np.testing.assert_array_equal(perm[morton_order(pts[perm])], order)


def test_morton_degenerate_inputs_and_speed():
    assert morton_order(np.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(morton_order(np.ones((5, 3))), np.arange(5))  # all equal: stable
    flat = np.c_[np.arange(10.0)[::-1], np.zeros(10), np.zeros(10)]  # two flat axes
    np.testing.assert_array_equal(morton_order(flat), np.arange(10)[::-1])
    pts = np.array([[np.nan, 0, 0], [1, 1, 1], [0, 0, 0], [np.inf, 0, 0]])
    np.testing.assert_array_equal(morton_order(pts), [2, 1, 0, 3])  # non-finite last
    with pytest.raises(ValueError):
        morton_order(np.zeros((4, 2)))
    big = np.random.default_rng(0).normal(size=(1_000_000, 3)).astype(np.float32)
    t = time.perf_counter()
    order = morton_order(big)
    dt = time.perf_counter() - t
    assert order.shape == (1_000_000,)
    assert dt < 10.0, f"morton_order of 1M points took {dt:.2f}s"  # ~0.2 s unloaded


# ---- quantisation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 4, 8, 11, 16])
def test_quantize_error_is_at_most_half_a_step(bits):
    rng = np.random.default_rng(bits)
    x = (rng.normal(size=(5000, 4, 3)) * rng.uniform(0.01, 100, (4, 3)) + 7).astype(np.float32)
    codes, lo, hi = quantize(x, bits)
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16) and codes.shape == x.shape
    assert lo.shape == hi.shape == (4, 3)
    np.testing.assert_array_equal(lo, x.min(axis=0))
    np.testing.assert_array_equal(hi, x.max(axis=0))
    assert codes.max() == (1 << bits) - 1 and codes.min() == 0
    y = dequantize(codes, lo, hi, bits)
    assert y.dtype == np.float32
    err = np.abs(y.astype(np.float64) - x)
    bound = quantization_error_bound(lo, hi, bits) + np.abs(x) * F32_REL
    assert (err <= bound).all()
    assert err.max() > 0.5 * quantization_error_bound(lo, hi, bits).max()  # the bound is tight-ish
    # the extremes are exact
    np.testing.assert_array_equal(y.min(axis=0), lo.astype(np.float32))
    np.testing.assert_array_equal(y.max(axis=0), hi.astype(np.float32))


def test_quantize_constant_empty_and_clipping():
    x = np.c_[np.full(10, 3.25), np.linspace(-1, 1, 10)].astype(np.float32)
    codes, lo, hi = quantize(x, 8)
    assert (codes[:, 0] == 0).all() and lo[0] == hi[0] == 3.25
    np.testing.assert_array_equal(dequantize(codes, lo, hi, 8)[:, 0], x[:, 0])
    codes, lo, hi = quantize(np.zeros((0, 5), np.float32), 12)
    assert codes.shape == (0, 5) and codes.dtype == np.uint16 and lo.shape == (5,)
    assert dequantize(codes, lo, hi, 12).shape == (0, 5)
    codes, lo, hi = quantize(np.array([-5.0, 0.0, 0.5, 5.0]), 8, lo=-1.0, hi=1.0)
    np.testing.assert_allclose(dequantize(codes, lo, hi, 8), [-1, 0, 0.5, 1], rtol=0, atol=1 / 255 + 1e-7)
    for bad in (0, 17, 8.0, True):
        with pytest.raises(ValueError):
            quantize(x, bad)
    with pytest.raises(ValueError):
        quantize(np.array([1.0, np.nan]), 8)


def test_fp16_helpers():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 5000) * 10.0 ** rng.uniform(-8, 4, 5000), [0.0, 65504.0, -1e-7]])
    h = to_fp16(x)
    assert h.dtype == np.float16
    err = np.abs(from_fp16(h, np.float64) - x)
    assert (err <= fp16_error_bound(x)).all()
    with pytest.raises(ValueError, match="float16 range"):
        to_fp16(np.array([1.0, 70000.0]))


# ---- k-means and R-VQ -----------------------------------------------------------------------------------
def _clusters(seed=0, per=200, k=5, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    labels = np.repeat(np.arange(k), per)
    x = (centres[labels] + rng.normal(0, 0.3, (k * per, dim))).astype(np.float32)
    return x, labels, centres


@pytest.mark.parametrize("kw", [dict(batch=None), dict(batch=200, iters=30)])
def test_kmeans_recovers_separated_clusters(kw):
    x, labels, centres = _clusters()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(x))
    cb, assign = weighted_kmeans(x, w, 5, seed=0, **kw)
    assert cb.shape == (5, 8) and cb.dtype == np.float32 and assign.dtype == np.int64
    # a bijection between found and true clusters, every point in its cluster's codeword
    mapping = {int(lab): int(np.unique(assign[labels == lab])[0]) for lab in range(5)}
    for lab in range(5):
        assert len(np.unique(assign[labels == lab])) == 1
    assert sorted(mapping.values()) == list(range(5))
    for lab, j in mapping.items():
        wm = np.average(x[labels == lab], axis=0, weights=w[labels == lab])
        tol = 1e-4 if kw.get("batch") is None else 0.1
        np.testing.assert_allclose(cb[j], wm, atol=tol)
    # assign is the nearest codeword
    d = ((x[:, None, :] - cb[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign, d.argmin(1))


def test_kmeans_heavy_point_drags_its_centroid():
    x, labels, _ = _clusters(seed=2, per=100, k=2, dim=3)
    heavy = int(np.flatnonzero(labels == 0)[np.argmax(np.linalg.norm(x[labels == 0] - x[labels == 0].mean(0), axis=1))])
    w = np.ones(len(x))
    cb_u, a_u = weighted_kmeans(x, w, 2, seed=0, batch=None)
    w[heavy] = 1000.0
    cb_w, a_w = weighted_kmeans(x, w, 2, seed=0, batch=None)
    j_u, j_w = a_u[heavy], a_w[heavy]
    np.testing.assert_allclose(cb_u[j_u], x[labels == 0].mean(0), atol=1e-4)
    expected = np.average(x[labels == 0], axis=0, weights=w[labels == 0])
    np.testing.assert_allclose(cb_w[j_w], expected, atol=1e-4)
    # pulled most of the way to the heavy point (1000 of 1099 units of weight)
    assert np.linalg.norm(cb_w[j_w] - x[heavy]) < 0.2 * np.linalg.norm(cb_u[j_u] - x[heavy])


def test_kmeans_deterministic_and_edge_cases():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 12)).astype(np.float32)
    w = rng.exponential(size=3000)
    for kw in (dict(batch=None), dict(batch=500), dict(init="random")):
        a = weighted_kmeans(x, w, 32, iters=5, seed=7, **kw)
        b = weighted_kmeans(torch.from_numpy(x), torch.from_numpy(w), 32, iters=5, seed=7, **kw)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # N < k: the points themselves, padded by repetition
    cb, assign = weighted_kmeans(x[:3], None, 8)
    np.testing.assert_array_equal(cb, x[[0, 1, 2, 0, 1, 2, 0, 1]])
    np.testing.assert_array_equal(assign, [0, 1, 2])
    # fewer distinct points than codewords (forces empty clusters): exact, no crash
    dup = np.repeat(x[:3], 40, axis=0)
    cb, assign = weighted_kmeans(dup, None, 6, seed=0, batch=None)
    np.testing.assert_array_equal(cb[assign], dup)
    # all-zero weights fall back to uniform; empty input
    cb, assign = weighted_kmeans(x[:200], np.zeros(200), 4, seed=0)
    assert np.isfinite(cb).all() and len(np.unique(assign)) == 4
    cb, assign = weighted_kmeans(np.zeros((0, 5), np.float32), None, 4)
    assert cb.shape == (4, 5) and assign.shape == (0,)
    with pytest.raises(ValueError):
        weighted_kmeans(x, -w, 4)
    np.testing.assert_array_equal(assign_nearest(x[:50], x[:10])[0][:10], np.arange(10))


def test_residual_vq_error_decreases_with_stages():
    rng = np.random.default_rng(4)
    x = canonical_quats(rng.normal(size=(3000, 4))).astype(np.float32)
    books, idx = residual_vq(x, stages=4, k=16, iters=10, seed=0)
    assert books.shape == (4, 16, 4) and idx.shape == (3000, 4)
    errs = [float(((x - rvq_decode(books, idx, s)) ** 2).sum(1).mean()) for s in range(5)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.25 * errs[1]
    np.testing.assert_array_equal(rvq_decode(books, idx), rvq_decode(books, idx, 4))


# ---- container ------------------------------------------------------------------------------------------
def _arrays():
    rng = np.random.default_rng(5)
    return {
        "f32": rng.normal(size=(100, 3)).astype(np.float32),
        "f16": rng.normal(size=(7, 2, 3)).astype(np.float16),
        "f64": np.array([np.pi, -0.0, 1e300, np.inf, np.nan]),
        "u8": rng.integers(0, 256, 333, dtype=np.uint8),
        "u16": rng.integers(0, 65536, (50, 2), dtype=np.uint16),
        "u32": rng.integers(0, 2**32, 9, dtype=np.uint32),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "i8": np.array([-128, 127], dtype=np.int8),
        "i16be": np.array([-2, 300], dtype=">i2"),
        "i32": rng.integers(-(2**31), 2**31, 10, dtype=np.int32),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "bool": rng.random(17) > 0.5,
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float32),
    }


def test_container_round_trip_is_bit_exact(tmp_path):
    arrays = _arrays()
    meta = {"name": "x", "n": np.int64(3), "lo": np.array([1.5, 2.0]), "nested": {"a": [1, 2]}}
    path = tmp_path / "a.sdz"
    size = write_container(path, arrays, meta, level=3)
    assert path.stat().st_size == size
    assert [p.name for p in tmp_path.iterdir()] == ["a.sdz"]  # no temporary left behind
    sections, meta2 = read_container(path)
    assert list(sections) == list(arrays)
    for name, a in arrays.items():
        b = sections[name]
        assert b.shape == a.shape and b.dtype == a.dtype.newbyteorder("="), name
        assert b.tobytes() == a.astype(a.dtype.newbyteorder("=")).tobytes(), name
        assert b.flags.writeable
    assert meta2 == {"name": "x", "n": 3, "lo": [1.5, 2.0], "nested": {"a": [1, 2]}}
    header = read_container_header(path)
    assert [s["name"] for s in header["sections"]] == list(arrays)
    with pytest.raises(ValueError):
        write_container(tmp_path / "b.sdz", {"obj": np.array(["a"], dtype=object)}, {})


def _small_container(tmp_path):
    path = tmp_path / "c.sdz"
    write_container(path, {"a": np.arange(20, dtype=np.float32), "b": np.arange(6, dtype=np.uint8)}, {"k": 1}, level=3)
    return path, path.read_bytes()


def _expect_error(tmp_path, data: bytes, match: str):
    bad = tmp_path / "bad.sdz"
    bad.write_bytes(data)
    with pytest.raises(UserError, match=match) as info:
        read_container(bad)
    assert str(bad) in str(info.value)


def test_container_corruption_is_a_user_error(tmp_path):
    path, data = _small_container(tmp_path)
    hlen = struct.unpack_from("<I", data, 8)[0]
    payload = 16 + hlen
    flip = lambda d, i: d[:i] + bytes([d[i] ^ 0x40]) + d[i + 1 :]  # noqa: E731
    _expect_error(tmp_path, flip(data, payload + 5), "section 'a'")
    _expect_error(tmp_path, flip(data, len(data) - 3), "section 'b'")
    _expect_error(tmp_path, flip(data, 16 + hlen // 2), "header checksum")
    _expect_error(tmp_path, flip(data, 13), "header checksum")  # the stored CRC itself
    _expect_error(tmp_path, b"PK\x03\x04" + data[4:], "magic")
    _expect_error(tmp_path, data[:4] + struct.pack("<H", 2) + data[6:], "version 2")
    _expect_error(tmp_path, data[:6] + struct.pack("<H", 2) + data[8:], "flags")
    # the compressed header read as plain JSON (its flag cleared), and a header frame that is not zstd
    _expect_error(tmp_path, data[:6] + struct.pack("<H", 0) + data[8:], "not valid JSON")
    junk = b"\x28\xb5\x2f\xfd" + b"\x00" * 12
    _expect_error(tmp_path, data[:8] + struct.pack("<II", len(junk), zlib.crc32(junk)) + junk, "does not decompress")
    for cut in (2, 10, 16 + hlen // 2, payload + 1, len(data) - 1):
        _expect_error(tmp_path, data[:cut], "truncated|magic")
    _expect_error(tmp_path, b"", "magic")
    _expect_error(tmp_path, data + b"\0", "trailing")
    with pytest.raises(UserError, match="no such file"):
        read_container(tmp_path / "missing.sdz")
    with pytest.raises(UserError, match="directory"):
        read_container(tmp_path)


def test_container_every_single_byte_flip_is_caught(tmp_path):
    _, data = _small_container(tmp_path)
    for i in range(len(data)):
        bad = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        with pytest.raises(UserError):
            C.decode_container(bad, "x.sdz")


def _header_json(data: bytes) -> dict:
    hlen = struct.unpack_from("<I", data, 8)[0]
    assert struct.unpack_from("<H", data, 6)[0] == C.FLAG_ZSTD_HEADER  # writers compress the header
    return json.loads(zstandard.ZstdDecompressor().decompress(data[16 : 16 + hlen]))


def _rewrite_header(data: bytes, edit) -> bytes:
    """A file whose header is edited and whose header CRC is recomputed (a consistent-looking
    header with wrong contents, as a buggy writer would produce), stored as plain JSON (flags 0,
    the layout of files written before the header was compressed)."""
    hlen = struct.unpack_from("<I", data, 8)[0]
    header = _header_json(data)
    hb = edit(header)
    hb = hb if isinstance(hb, bytes) else json.dumps(header).encode()
    return data[:6] + struct.pack("<HII", 0, len(hb), zlib.crc32(hb)) + hb + data[16 + hlen :]


def test_container_reads_a_plain_json_header_as_well(tmp_path):
    """Files written with an uncompressed header (flags 0) decode to the same arrays and metadata."""
    path, data = _small_container(tmp_path)
    plain = _rewrite_header(data, lambda h: None)
    assert len(plain) > len(data)  # compressing the header saved bytes even on this tiny file
    a, meta_a = C.decode_container(data, "a.sdz")
    b, meta_b = C.decode_container(plain, "b.sdz")
    assert meta_a == meta_b == {"k": 1}
    assert list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_container_inconsistent_header_is_a_user_error(tmp_path):
    _, data = _small_container(tmp_path)

    def size(h):
        h["sections"][0]["raw_nbytes"] = 84
        h["sections"][0]["shape"] = [21]

    def raw_crc(h):
        h["sections"][1]["raw_crc32"] ^= 1

    def dtype(h):
        h["sections"][0]["dtype"] = "<c8"

    def shape(h):
        h["sections"][0]["shape"] = [3, 7]

    _expect_error(tmp_path, _rewrite_header(data, size), "decompresses to 80 bytes, expected 84")
    _expect_error(tmp_path, _rewrite_header(data, raw_crc), "decoded data of section 'b'")
    _expect_error(tmp_path, _rewrite_header(data, dtype), "unsupported dtype")
    _expect_error(tmp_path, _rewrite_header(data, shape), "do not match")
    _expect_error(tmp_path, _rewrite_header(data, lambda h: b"{not json"), "not valid JSON")
    _expect_error(tmp_path, _rewrite_header(data, lambda h: b"[]"), "not a JSON object")


# ---- codec ----------------------------------------------------------------------------------------------
def _check_round_trip(scene, dec, meta, sections):
    """Every attribute of ``dec`` within its configured precision of ``scene`` (storage order)."""
    attrs = meta["attributes"]
    ref = {k: v.numpy().astype(np.float64) for k, v in scene.items()}
    got = {k: v.numpy().astype(np.float64) for k, v in dec.items()}
    for name in ("means", "quats", "scales", "opacities", "sh0", "shN"):
        if name in ("sh0", "shN") and name not in attrs:  # colour VQ: checked by the caller
            continue
        info = attrs[name]
        x, y = ref[name], got[name]
        if name == "quats" and info.get("canonical"):
            x = canonical_quats(x)
        if name == "opacities" and info["space"] == "sigmoid":
            x, y = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-y))
        if info["encoding"] == "fp32":
            assert np.array_equal(x, y), name
            continue
        if info["encoding"] == "fp16":
            base = x - np.asarray(info.get("origin", 0.0))
            tol = fp16_error_bound(base) + 2 * np.abs(x) * F32_REL
        else:
            tol = quantization_error_bound(info["lo"], info["hi"], info["bits"]) + 2 * np.abs(x) * F32_REL
            if name == "opacities":
                tol = tol + 1e-6  # the logit clamp at 1e-7 and float32 logits
        err = np.abs(y - x)
        assert (err <= tol).all(), (name, float((err - tol).max()))


def test_codec_round_trip_default_precision():
    scene = clustered_scene(4000, seed=1)
    sections, meta = encode_scene(scene)
    dec = decode_scene(sections, meta)
    order = encode_order(scene.means.numpy())
    _check_round_trip(scene[torch.from_numpy(order)], dec, meta, sections)
    assert sections["means"].dtype == np.float16 and sections["shN"].dtype == np.uint8
    assert meta["count"] == 4000 and meta["sh_degree"] == 3 and meta["order"] == "morton"
    assert (dec.quats[:, 0] >= 0).all()


def test_codec_fp32_is_bit_exact_and_other_settings():
    scene = clustered_scene(3000, seed=2)
    order = torch.from_numpy(encode_order(scene.means.numpy()))
    ref = scene[order]
    sections, meta = encode_scene(scene, position="fp32", bits={k: "fp32" for k in DEFAULT_BITS})
    dec = decode_scene(sections, meta)
    for (name, a), (_, b) in zip(ref.items(), dec.items()):
        assert torch.equal(a, b), name
    sections, meta = encode_scene(
        scene, position=16, bits={"opacity": 12, "scales": 16, "quats": "fp16", "sh0": "q10", "shN": 4}
    )
    assert sections["means"].dtype == np.uint16 and sections["scales"].dtype == np.uint16
    _check_round_trip(ref, decode_scene(sections, meta), meta, sections)
    sections, meta = encode_scene(scene, sh_degree=1, bits={"opacities": "fp16"})
    dec = decode_scene(sections, meta)
    assert dec.sh_degree == 1 and meta["attributes"]["opacities"]["space"] == "logit"
    _check_round_trip(ref.with_sh_degree(1), dec, meta, sections)
    with pytest.raises(ValueError):
        encode_scene(scene, bits={"means": 8})
    with pytest.raises(ValueError):
        encode_scene(scene, bits={"shN": 0})


def test_codec_edge_cases():
    for n in (0, 1):
        scene = clustered_scene(max(n, 1), seed=3)[:n]
        dec = decode_scene(*encode_scene(scene))
        assert len(dec) == n and dec.sh_degree == 3
    bad = clustered_scene(10)
    bad.means[3, 1] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        encode_scene(bad)
    far = clustered_scene(10)
    far.means[0, 0] = 1e6
    with pytest.raises(UserError, match="float16"):
        encode_scene(far)
    assert len(decode_scene(*encode_scene(far, position=16))) == 10
    sections, meta = encode_scene(clustered_scene(10))
    with pytest.raises(UserError, match="shape"):
        decode_scene(sections, {**meta, "count": 11})
    with pytest.raises(UserError, match="missing"):
        decode_scene({k: v for k, v in sections.items() if k != "scales"}, meta)
    with pytest.raises(UserError, match="format"):
        decode_scene(sections, {})


def test_codec_color_vq():
    scene = clustered_scene(5000, seed=4)
    sig = np.random.default_rng(0).exponential(size=5000)
    vq = build_color_vq(scene, sig, k=300, fraction=0.6, iters=5)
    keep = vq["keep_mask"]
    assert keep.sum() == 2000 and vq["codebook"].shape == (300, 48)
    assert sig[keep].min() >= sig[~keep].max()  # the least significant 60 % are VQ'd
    sections, meta = encode_scene(scene, vq=vq)
    assert sections["color_index"].dtype == np.uint16 and sections["color_index"].shape == (3000,)
    assert "sh0" not in sections and meta["colors"]["kept"] == 2000
    dec = decode_scene(sections, meta)
    order = encode_order(scene.means.numpy(), keep)
    ref = scene[torch.from_numpy(order)]
    _check_round_trip(ref, dec, meta, sections)
    feats_ref = color_features(ref).astype(np.float64)
    feats = color_features(dec).astype(np.float64)
    kept = keep[order]
    assert kept[:2000].all() and not kept[2000:].any()
    assert (np.abs(feats[:2000] - feats_ref[:2000]) <= fp16_error_bound(feats_ref[:2000])).all()
    expect = from_fp16(to_fp16(vq["codebook"]))[vq["assign"]]  # VQ'd Gaussians in input order
    rank = np.cumsum(~keep) - 1
    np.testing.assert_array_equal(feats[2000:], expect[rank[order[2000:]]])
    # assign given for all N Gaussians gives the same file; a truncated codebook for degree 1
    full = np.zeros(5000, np.int64)
    full[~keep] = vq["assign"]
    s2, _ = encode_scene(scene, vq={**vq, "assign": full})
    np.testing.assert_array_equal(s2["color_index"], sections["color_index"])
    s1, m1 = encode_scene(scene, vq=vq, sh_degree=1)
    assert s1["color_codebook"].shape == (300, 12) and decode_scene(s1, m1).sh_degree == 1
    with pytest.raises(ValueError):
        encode_scene(scene, vq={**vq, "assign": vq["assign"][:-1]})


def test_sdz_file_round_trip_and_compression_ratio(tmp_path):
    n = 50_000
    scene = clustered_scene(n, seed=5)
    raw = 62 * 4 * n  # the Inria PLY's 62 float32 per Gaussian
    path = tmp_path / "scene.sdz"
    report = {}
    t = time.perf_counter()
    size = save_sdz(scene, path).stat().st_size
    report["default (fp16 pos, 8-bit attrs), zstd 19"] = (size, time.perf_counter() - t)
    dec = load_sdz(path)
    sections, meta = read_container(path)
    order = torch.from_numpy(encode_order(scene.means.numpy()))
    _check_round_trip(scene[order], dec, meta, sections)

    sig = np.random.default_rng(1).exponential(size=n)
    t = time.perf_counter()
    vq = build_color_vq(scene, sig, k=1024, fraction=0.6, iters=5)
    size_vq = save_sdz(scene, tmp_path / "vq.sdz", vq=vq).stat().st_size
    report["+ colour VQ 60 % / 1024 codes (incl. k-means)"] = (size_vq, time.perf_counter() - t)
    assert len(load_sdz(tmp_path / "vq.sdz")) == n
    t = time.perf_counter()
    size_vq8 = save_sdz(scene, tmp_path / "vq8.sdz", vq={**vq, "kept_encoding": "bits"}).stat().st_size
    report["colour VQ, kept colours 8-bit instead of fp16 (same codebook)"] = (size_vq8, time.perf_counter() - t)
    dec = load_sdz(tmp_path / "vq8.sdz")
    sections, meta = read_container(tmp_path / "vq8.sdz")
    _check_round_trip(
        scene[torch.from_numpy(encode_order(scene.means.numpy(), vq["keep_mask"]))][:20_000],
        dec[:20_000],
        meta,
        sections,
    )
    print(f"\n.sdz size for a random-ish {n}-Gaussian degree-3 scene (PLY float32 payload {raw} B):")
    for label, (b, dt) in report.items():
        print(f"  {label}: {b} B, {raw / b:.2f}x smaller, {dt:.2f}s")
    assert raw / size > 3.5  # 8-bit attributes + fp16 positions: 17 bytes + 45 SH bytes, < 62 B
    assert size_vq < size  # kept colours in fp16 (96 B) vs 8-bit (48 B) eat most of the gain here
    assert size_vq8 < 0.65 * size

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated") as info:
        load_sdz(path)
    assert str(path) in str(info.value)
    other = tmp_path / "other.sdz"
    write_container(other, {"x": np.zeros(3)}, {"format": "something else"})
    with pytest.raises(UserError, match="not a splatdistill") as info:
        load_sdz(other)
    assert str(other) in str(info.value)


def test_codec_residual_vq_of_scales_and_rotations():
    """R-VQ'd attributes decode to the sums of their codewords, in storage order; the rest is as
    without R-VQ; an index beyond the codebook or a missing section is a user error."""
    scene = clustered_scene(900, degree=1, seed=3)
    sb, si = residual_vq(scene.scales.numpy(), stages=3, k=16, seed=0)
    qb, qi = residual_vq(canonical_quats(scene.quats.numpy()).astype(np.float32), stages=2, k=16, seed=0)
    rvq = {"scales": (sb, si), "quats": (qb, qi)}
    sections, meta = encode_scene(scene, rvq=rvq)
    order = encode_order(scene.means.numpy())
    assert sections["scales_rvq_index"].dtype == np.uint8 and sections["scales_rvq_index"].shape == (900, 3)
    assert "scales" not in sections and "quats" not in sections
    dec = decode_scene(sections, meta)
    assert np.array_equal(dec.scales.numpy(), rvq_decode(sb, si)[order])
    assert np.array_equal(dec.quats.numpy(), rvq_decode(qb, qi)[order])
    plain_sections, plain_meta = encode_scene(scene)
    plain = decode_scene(plain_sections, plain_meta)
    for k in ("means", "opacities", "sh0", "shN"):
        assert torch.equal(dec.params[k], plain.params[k]), k
    bad = dict(sections, scales_rvq_index=np.full((900, 3), 16, dtype=np.uint8))
    with pytest.raises(UserError, match="beyond its codebook"):
        decode_scene(bad, meta)
    missing = {k: v for k, v in sections.items() if k != "quats_rvq_codebooks"}
    with pytest.raises(UserError, match="quats_rvq_codebooks"):
        decode_scene(missing, meta)
    with pytest.raises(ValueError, match="indices must be"):
        encode_scene(scene, rvq={"scales": (sb, si[:10])})
