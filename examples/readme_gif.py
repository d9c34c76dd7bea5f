"""The README's GIF: the condition image next to a generated video, both scaled up 2x (nearest), at the video's fps.

    flashi2v generate --image flashi2v/default_model/examples/test_000002.png --prompt "..." --output outputs/demo.mp4
    python examples/readme_gif.py outputs/demo.mp4 --image flashi2v/default_model/examples/test_000002.png \
        --output docs/assets/default_model_example.gif

(``make demo`` writes ``outputs/demo.mp4`` from that image and prompt.)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def side_by_side(image: np.ndarray, frames: np.ndarray, scale: int = 2, gap: int = 8) -> list[np.ndarray]:
    """uint8 frames [H*scale, (W+W')*scale + gap, 3]: ``image`` [H, W, 3] on the left, each of ``frames`` on the
    right, a white gap between."""
    if image.shape[0] != frames.shape[1]:
        raise ValueError(f"image height {image.shape[0]} != video height {frames.shape[1]}")
    up = lambda a: a.repeat(scale, axis=-3).repeat(scale, axis=-2)  # noqa: E731
    left, right = up(image), up(frames)
    sep = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return [np.concatenate([left, sep, f], axis=1) for f in right]


def main(argv: list[str] | None = None) -> int:
    from flashi2v.errors import FlashI2VError
    from flashi2v.media import load_image, read_video, write_video

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video")
    p.add_argument("--image", required=True, help="the condition image (shown unchanged on the left)")
    p.add_argument("--output", required=True)
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args(argv)
    try:
        frames, fps = read_video(a.video)
        image = load_image(a.image).permute(1, 2, 0).numpy()
        out = np.stack(side_by_side(image, np.asarray(frames), a.scale))
        write_video(out, a.output, fps=fps)
    except (FlashI2VError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output} ({len(out)} frames, {out.shape[2]}x{out.shape[1]}, {fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
