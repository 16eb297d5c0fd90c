"""JPEG frame header (SOF) parsing: the image size and coding of a JPEG file without decoding it.

`data.decode=device` draws the random-resized-crop box in the loader worker before the image is
decoded, so the worker needs the image's height and width; they are in the start-of-frame
segment (ITU-T T.81, section B.2.2: marker, length, precision P, lines Y, samples per line X,
components Nf).  Segments before it (APPn, DQT, DHT, COM, ...) are skipped by their lengths.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# SOFn markers (T.81 table B.1): 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Huffman-coded, DCT-based frames that every decoder we hand off to supports: baseline, extended, progressive
DEVICE_SOF = frozenset({0xC0, 0xC1, 0xC2})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


@dataclass(frozen=True)
class JpegHeader:
    height: int
    width: int
    components: int  # 1 grayscale, 3 YCbCr (or RGB), 4 CMYK/YCCK
    sof: int  # the SOFn marker byte: 0xC0 baseline, 0xC2 progressive, ...
    precision: int  # bits per sample
    orientation: int | None = None  # the EXIF Orientation tag (1-8) when an Exif APP1 segment has one


def parse_jpeg_header(buf: bytes | memoryview, limit: int = 1 << 20) -> JpegHeader | None:
    """The frame header of a JPEG file, or None when `buf` is not a JPEG or its header is unreadable.

    Reads only the marker segments before the first SOFn (within the first `limit` bytes).
    """
    n = min(len(buf), limit)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:  # SOI
        return None
    pos, orientation = 2, None
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None  # garbage between segments
        while pos < n and buf[pos] == 0xFF:  # fill bytes (B.1.1.2)
            pos += 1
        if pos >= n:
            return None
        marker = buf[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):  # second SOI, EOI or scan data before any frame header
            return None
        if pos + 2 > n:
            return None
        (length,) = struct.unpack_from(">H", buf, pos)  # includes its own two bytes
        if length < 2:
            return None
        if marker in _SOF:
            if length < 8 or pos + 8 > n:
                return None
            precision, height, width, comps = struct.unpack_from(">BHHB", buf, pos + 2)
            if height == 0 or width == 0 or comps == 0:  # height 0: defined later by a DNL marker (rare)
                return None
            return JpegHeader(height, width, comps, marker, precision, orientation)
        if marker == 0xE1 and orientation is None:  # APP1: Exif (or XMP)
            orientation = _exif_orientation(bytes(buf[pos + 2:min(pos + length, n)]))
        pos += length
    return None


def _exif_orientation(seg: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 in an APP1 payload, or None (not Exif, no such tag, unreadable)."""
    if seg[:6] != b"Exif\x00\x00" or seg[6:10] not in (b"II*\x00", b"MM\x00*"):
        return None
    tiff, e = seg[6:], "<" if seg[6:8] == b"II" else ">"  # TIFF 6.0 header: byte order, 42, offset of IFD0
    (ifd,) = struct.unpack_from(e + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(e + "H", tiff, ifd)
    for k in range(count):  # 12-byte entries: tag, type, count, value (a SHORT sits in the first 2 bytes)
        o = ifd + 2 + 12 * k
        if o + 12 > len(tiff):
            return None
        tag, typ, cnt = struct.unpack_from(e + "HHI", tiff, o)
        if tag == 0x0112:
            return struct.unpack_from(e + "H", tiff, o + 8)[0] if typ == 3 and cnt == 1 else None
    return None


def device_decodable(h: JpegHeader | None) -> bool:
    """True when torchvision's decode_jpeg (libjpeg-turbo on the CPU, nvJPEG on CUDA) gives the same RGB image the
    worker path would: 8-bit Huffman DCT, grayscale or 3-component.  CMYK/YCCK, 12-bit, lossless and arithmetic-coded
    files go through the worker's decoder."""
    return h is not None and h.sof in DEVICE_SOF and h.precision == 8 and h.components in (1, 3)
