#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz.rs (tests/fixtures/fuzz/): small valid files of every
kind agc reads from outside, and real-world breakage of them (truncated, bit-flipped, huge
claimed sizes, wrong magic). The fuzz test mutates these; keep them small.

    python3 scripts/make_fuzz_corpus.py     # needs Pillow, numpy, torch and pypng

The PNGs cover every colour type and bit depth agc's row-by-row PNG decoder converts (palette
with transparency, 1-bit and 16-bit grey, grey + alpha, 16-bit RGB and RGBA, Adam7-interlaced):
tests/fuzz.rs checks that it gives the `image` crate's pixels for each.
"""
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fuzz"


def photo(w=40, h=24):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 6 % 256, y * 10 % 256, (x + y) * 4 % 256], -1)
    rgb = (rgb + rng.integers(0, 30, rgb.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write(folder, name, data):
    path = OUT / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def images():
    buf = io.BytesIO()
    photo().save(buf, "JPEG", quality=80, exif=exif_orientation(6))
    jpeg = buf.getvalue()
    write("image", "exif-rotated.jpg", jpeg)
    buf = io.BytesIO()
    photo(32, 32).save(buf, "JPEG", quality=70, progressive=True)
    write("image", "progressive.jpg", buf.getvalue())
    buf = io.BytesIO()
    photo().convert("CMYK").save(buf, "JPEG", quality=75)
    write("image", "cmyk.jpg", buf.getvalue())
    buf = io.BytesIO()
    photo(24, 40).save(buf, "PNG", exif=exif_orientation(8))
    png = buf.getvalue()
    write("image", "exif-rotated.png", png)
    buf = io.BytesIO()
    photo(16, 16).convert("LA").save(buf, "PNG")
    write("image", "grey-alpha.png", buf.getvalue())
    for name, image in [
        ("palette-trns.png", photo(20, 12).quantize(16)),
        ("one-bit.png", photo(19, 13).convert("1")),
        ("grey16.png", Image.fromarray(np.asarray(photo(17, 9).convert("L")).astype(np.uint16)
                                       * 257 + 3)),
    ]:
        buf = io.BytesIO()
        extra = {"transparency": 3} if image.mode == "P" else {}
        image.save(buf, "PNG", **extra)
        write("image", name, buf.getvalue())
    # 16-bit and interlaced PNGs, which Pillow does not write, by pypng.
    import png as pypng
    rng = np.random.default_rng(11)
    for name, planes, interlace in [
        ("rgb16-interlaced.png", 3, True),
        ("rgba16.png", 4, False),
        ("rgba8-interlaced.png", 4, True),
    ]:
        bits = 8 if "8" in name else 16
        w, h = 13, 11
        pixels = rng.integers(0, 2 ** bits, (h, w * planes))
        buf = io.BytesIO()
        pypng.Writer(w, h, greyscale=False, alpha=planes == 4, bitdepth=bits,
                   interlace=interlace).write(buf, pixels.tolist())
        write("image", name, buf.getvalue())
    write("image", "truncated.jpg", jpeg[: len(jpeg) // 2])
    flipped = bytearray(jpeg)
    for i in range(len(flipped) // 3, len(flipped), 97):
        flipped[i] ^= 0x55
    write("image", "bit-flipped.jpg", bytes(flipped))
    write("image", "truncated.png", png[: len(png) * 2 // 3])
    # A PNG whose header claims 20 000 × 20 000 (400 MP) over a few bytes of pixels.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    write("image", "claims-huge.png", bomb)
    # A JPEG whose frame header claims 65 535 × 65 535.
    sof = jpeg.index(b"\xff\xc0")
    huge = bytearray(jpeg)
    huge[sof + 5: sof + 9] = struct.pack(">HH", 65535, 65535)
    write("image", "claims-huge.jpg", bytes(huge))
    write("image", "wrong-magic.jpg", b"GIF89a" + jpeg[6:200])
    write("image", "empty.jpg", b"")


def csvs():
    write("csv", "train.csv", (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target,lesion_box\n"
        "ISIC_0000001,IP_1,male,45.0,torso,0,10 12 40 44\n"
        "ISIC_0000002,IP_1,female,,lower extremity,1,\n"
        "ISIC_0000003,IP_2,,90.0,,0,0 0 5 5\n"
        "\"ISIC_0000004\",IP_3,male,35,\"head/neck\",1,3 4 30 30\n").encode())
    write("csv", "test.csv", (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge\n"
        "ISIC_0052060,IP_3579794,male,70.0,\n"
        "ISIC_0052349,IP_7782715,male,40.0,lower extremity\n").encode())
    write("csv", "predictions.csv", (
        "image_name,prediction\nISIC_0000001,0.25\nISIC_0000002,0.75\n"
        "ISIC_0000003,0.5\nISIC_0000004,0.9\n").encode())


def weights():
    # A whole torchvision-keyed ResNet [1, 1, 1, 1] of width 2 with one logit
    # (scripts/learning_parity.py's Net), so that the unmutated files load.
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from learning_parity import Net

    torch.manual_seed(0)
    state = Net(2, 0.0).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    write("weights", "w2.pth", buf.getvalue())
    # safetensors by hand: an 8-byte little-endian header length, a JSON header, the data.
    header, data = {}, b""
    for name, t in state.items():
        kind, raw = ("I64", t.numpy().astype("<i8")) if t.dtype == torch.int64 else (
            "F32", t.numpy().astype("<f4"))
        raw = raw.tobytes()
        header[name] = {"dtype": kind, "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    write("weights", "w2.safetensors", struct.pack("<Q", len(head)) + head + data)


if __name__ == "__main__":
    images()
    csvs()
    weights()
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files under {OUT}")
