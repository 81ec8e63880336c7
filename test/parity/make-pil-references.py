#!/usr/bin/env python3
# Pillow's outputs for runtime/image-input.ts to match (test/unit/image-input.test.ts): LANCZOS resizes of RGB
# and L images up and down at odd sizes, convert("L") of RGB, and the decode of a baseline JPEG.
#
#   /tmp/refenv/bin/python test/parity/make-pil-references.py --out test/fixtures/pil-references.json
import argparse
import base64
import io
import json

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {"pillow": Image.__version__, "resize": [], "grey": None, "jpeg": None}
    for (w, h, W, H, mode) in [(37, 29, 32, 32, "RGB"), (20, 24, 48, 40, "RGB"), (64, 48, 16, 12, "RGB"), (33, 50, 33, 20, "RGB"), (31, 17, 16, 40, "L")]:
        c = 3 if mode == "RGB" else 1
        arr = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        img = Image.fromarray(arr if c == 3 else arr[:, :, 0], mode)
        r = np.array(img.resize((W, H), resample=Image.LANCZOS))
        out["resize"].append({"mode": mode, "size": [w, h], "to": [W, H], "in": arr.flatten().tolist(), "out": r.flatten().tolist()})
    g = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    out["grey"] = {"size": [11, 9], "in": g.flatten().tolist(), "out": np.array(Image.fromarray(g, "RGB").convert("L")).flatten().tolist()}
    y, x = np.mgrid[0:24, 0:40]
    smooth = np.stack([x * 6, y * 10, (x + y) * 4], -1).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(smooth, "RGB").save(buf, format="JPEG", quality=90)
    dec = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out["jpeg"] = {"size": [40, 24], "b64": base64.b64encode(buf.getvalue()).decode(), "decoded": dec.flatten().tolist()}
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
