"""The quality report's PNG: one horizontal bar panel per measure, drawn with Pillow (already a dependency,
so the report needs no plotting library)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

PANELS = (("size_mb", "size on disk (MB)"), ("prompts_per_s", "prompts / s (CPU)"),
          ("top1_agreement", "top-1 agreement with fp32"), ("kendall_tau", "Kendall tau vs fp32"))
ROW_H, LABEL_W, BAR_W, PAD = 18, 150, 260, 12


def bar_chart(rows: Sequence[dict], path: Path, panels=PANELS) -> Path:
    """Write a PNG with one panel per (key, title); rows need 'name' and the keys (None = no bar).

    Args:
        rows: one dict per variant.
        path: output .png.
        panels: (key, title) pairs.
    """
    font = ImageFont.load_default()
    panel_w = LABEL_W + BAR_W + 70
    height = PAD * 2 + 20 + ROW_H * len(rows)
    img = Image.new("RGB", (panel_w * len(panels) + PAD, height), "white")
    draw = ImageDraw.Draw(img)
    for p, (key, title) in enumerate(panels):
        x0 = PAD + p * panel_w
        draw.text((x0, PAD), title, fill="black", font=font)
        vals = [r.get(key) for r in rows]
        vmax = max([v for v in vals if isinstance(v, (int, float)) and v == v] or [1.0]) or 1.0
        for i, (r, v) in enumerate(zip(rows, vals)):
            y = PAD + 20 + i * ROW_H
            draw.text((x0, y + 3), str(r["name"])[:22], fill="black", font=font)
            if isinstance(v, (int, float)) and v == v:
                w = int(BAR_W * max(v, 0) / vmax)
                draw.rectangle([x0 + LABEL_W, y + 3, x0 + LABEL_W + w, y + ROW_H - 3], fill=(70, 110, 180))
                draw.text((x0 + LABEL_W + w + 4, y + 3), f"{v:.3g}", fill="black", font=font)
            else:
                draw.text((x0 + LABEL_W, y + 3), "n/a", fill="gray", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
