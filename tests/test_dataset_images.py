"""Item images: verification and normalisation, per-reason counts, the content-keyed cache, the image map,
URL downloads from a local HTTP server (never an external host), and the no-op/rebuild rules of prepare."""
from __future__ import annotations

import http.server
import io
import json
import logging
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

import dataset.images as images_mod
from config import DataConfig
from dataset.format import PreparedDataset
from dataset.image_download import DownloadSettings, download_all
from dataset.image_processing import ImageRejected, ImageSettings, normalise_image
from dataset.prepare import prepare

# ------------------------------------------------------------------ builders
def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg(size=(600, 400), color=(200, 30, 30)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=95)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny 1x1 PNG whose IHDR (CRC fixed up) claims ``width`` x ``height``: a decompression bomb header."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    # signature (8) + length (4) + b"IHDR" (4), then width, height (big-endian uint32), ..., CRC after 13 bytes
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def palette_with_transparency() -> bytes:
    """4x4 palette PNG: left half red (index 0), right half index 1, which is transparent."""
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    for x in (2, 3):
        for y in range(4):
            img.putpixel((x, y), 1)
    return encode(img, "PNG", transparency=1)


def rgba_half_transparent() -> bytes:
    """Fully transparent black left column, opaque green right column (2x1)."""
    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 255, 0, 255))
    return encode(img, "PNG")


def custom_dataset(root: Path, images: dict[str, str | None], **cfg_kw) -> DataConfig:
    """A custom dataset of one item per ``images`` key (value: the items file's ``image``), 3 users seeing all.

    Every item keeps its place through filtering (min_uc = min_sc = 1), so image counts are per item.
    """
    root.mkdir(parents=True, exist_ok=True)
    ids = list(images)
    inter = root / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},{i},{100 * u + k}\n" for u in range(3) for k, i in enumerate(ids)))
    items = root / "items.csv"
    items.write_text("item_id,title,image\n" + "".join(f"{i},Title {i},{images[i] or ''}\n" for i in ids))
    kw = {"min_uc": 1, "min_sc": 1, "output_dir": str(root / "prepared"), "image_cache_dir": str(root / "cache"),
          **cfg_kw}
    return DataConfig(dataset="custom", interactions=str(inter), items=str(items), **kw)


def _rgb(data: bytes, settings: ImageSettings = ImageSettings()) -> Image.Image:
    out, _, _ = normalise_image(data, settings)
    img = Image.open(io.BytesIO(out))
    img.load()
    return img


def _close(a, b, tol=12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# ------------------------------------------------------------------ normalise_image

def test_large_jpeg_is_resized_keeping_the_aspect_ratio():
    img = _rgb(jpeg((600, 400)))
    assert img.mode == "RGB" and img.size == (448, round(400 * 448 / 600))


def test_small_rgb_jpeg_is_kept_byte_for_byte_and_never_upscaled():
    data = jpeg((185, 278))
    out, ext, info = normalise_image(data, ImageSettings())
    assert (out, ext, info["passthrough"]) == (data, ".jpg", True)


@pytest.mark.parametrize("data, why", [
    (b"", "zero-byte"),
    (jpeg()[:400], "truncated JPEG"),
    (b"this is a text file, not a JPEG\n" * 10, "text renamed .jpg"),
])
def test_broken_files_are_rejected_as_corrupt(data, why):
    with pytest.raises(ImageRejected) as e:
        normalise_image(data, ImageSettings())
    assert e.value.reason == "corrupt", why


def test_header_claiming_a_huge_size_is_too_large_without_decoding():
    with pytest.raises(ImageRejected) as e:
        normalise_image(png_claiming_size(30_000, 30_000), ImageSettings())
    assert e.value.reason == "too_large"


def test_pixel_limit_from_the_settings_rejects_before_decoding():
    with pytest.raises(ImageRejected, match="10000 pixels > limit 5000") as e:
        normalise_image(jpeg((100, 100)), ImageSettings(max_pixels=5000))
    assert e.value.reason == "too_large"


def test_cmyk_becomes_rgb():
    img = _rgb(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert img.mode == "RGB" and _close(img.getpixel((8, 8)), (255, 0, 0))


def test_palette_transparency_is_composited_on_white():
    img = _rgb(palette_with_transparency())
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((3, 0)) == (255, 255, 255)


def test_alpha_is_composited_on_white():
    img = _rgb(rgba_half_transparent())
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 0)) == (0, 255, 0)
    la = _rgb(encode(Image.new("LA", (2, 2), (0, 0)), "PNG"))
    assert la.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_not_clipped():
    img16 = Image.new("I;16", (2, 1))
    img16.putpixel((0, 0), 65535)
    img16.putpixel((1, 0), 32768)
    img = _rgb(encode(img16, "PNG"))
    assert img.getpixel((0, 0)) == (255, 255, 255) and _close(img.getpixel((1, 0)), (128, 128, 128), 1)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    img = _rgb(encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif))
    assert img.size == (20, 40)


# ------------------------------------------------------------------ end to end through prepare

@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One custom dataset holding every local bad-input case next to good images."""
    root = tmp_path_factory.mktemp("mixed")
    pics = root / "pics"
    pics.mkdir()
    files = {"good.jpg": jpeg(), "small.png": encode(Image.new("RGB", (30, 20), (1, 2, 3)), "PNG"),
             "zero.jpg": b"", "trunc.jpg": jpeg()[:400], "text.jpg": b"not an image\n" * 20,
             "cmyk.jpg": encode(Image.new("CMYK", (500, 500), (0, 255, 255, 0)), "JPEG"),
             "pal.png": palette_with_transparency(), "rgba.png": rgba_half_transparent(),
             "bomb.png": png_claiming_size(30_000, 30_000)}
    for name, data in files.items():
        (pics / name).write_bytes(data)
    (pics / "a_folder.jpg").mkdir()
    imgs = {"good": "pics/good.jpg", "small": "pics/small.png", "zero": "pics/zero.jpg", "trunc": "pics/trunc.jpg",
            "text": "pics/text.jpg", "cmyk": "pics/cmyk.jpg", "pal": "pics/pal.png", "rgba": "pics/rgba.png",
            "bomb": "pics/bomb.png", "gone": "pics/not_there.jpg", "dir": "pics/a_folder.jpg", "none": None,
            "same": "pics/good.jpg"}
    cfg = custom_dataset(root, imgs)
    return cfg, PreparedDataset(prepare(cfg))


def test_every_item_stays_and_has_one_reason_or_an_image(mixed):
    _, ds = mixed
    m = ds.manifest["images"]
    assert len(ds.items) == 13
    expected = {"attached": 6, "corrupt": 3, "too_large": 1, "missing_file": 1, "unreadable": 1, "no_source": 1,
                "download_failed": 0, "download_disabled": 0, "missing": 2}
    assert {k: m[k] for k in expected} == expected
    assert m["attached"] + sum(m[r] for r in images_mod.REASONS) == m["items"] == 13
    attached = ds.items["image_path"].notna()
    assert set(ds.items.index[attached]) == {"good", "small", "cmyk", "pal", "rgba", "same"}
    assert ds.items.loc["trunc", "image"] == "pics/trunc.jpg"  # the source stays, as given


def test_attached_images_are_rgb_within_the_size_limit(mixed):
    _, ds = mixed
    for item_id, rel in ds.items["image_path"].dropna().items():
        assert not Path(rel).is_absolute() and rel.startswith("images/")
        assert ds.image_file(item_id) == (ds.root / rel).resolve()
        with Image.open(ds.root / rel) as img:
            assert img.mode == "RGB" and max(img.size) <= 448
    assert ds.image_file("gone") is None
    with Image.open(ds.image_file("small")) as img:
        assert img.size == (30, 20)  # not upscaled


def test_the_same_content_is_decoded_once(mixed):
    _, ds = mixed
    # 11 local files exist; good.jpg is used twice and the folder cannot be read: 9 distinct decodes
    assert ds.manifest["images"]["processed"] == 9 and ds.manifest["images"]["cached"] == 0


def test_second_run_into_a_new_folder_decodes_nothing(mixed, tmp_path, monkeypatch):
    cfg, first = mixed
    calls = []
    real = images_mod.normalise_image
    monkeypatch.setattr(images_mod, "normalise_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = PreparedDataset(prepare(DataConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "again")})))
    m = again.manifest["images"]
    assert calls == [] and m["processed"] == 0 and m["cached"] == 9
    assert {k: m[k] for k in ("attached", "corrupt", "too_large")} == {"attached": 6, "corrupt": 3, "too_large": 1}
    for rel in again.items["image_path"].dropna():
        assert (again.root / rel).read_bytes() == (first.root / rel).read_bytes()


def test_changed_max_side_reprocesses_with_the_new_size(mixed, tmp_path):
    cfg, _ = mixed
    ds = PreparedDataset(prepare(DataConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "s"),
                                               "image_max_side": 64})))
    assert ds.manifest["images"]["processed"] == 9
    with Image.open(ds.image_file("good")) as img:
        assert img.size == (64, 43)


def test_lowered_pixel_limit_counts_too_large(mixed, tmp_path):
    cfg, _ = mixed
    ds = PreparedDataset(prepare(DataConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "p"),
                                               "image_max_pixels": 1000})))
    # good, same (600x400), cmyk (500x500) exceed 1000 pixels now; small (600 px) and the 4x4/2x1 pass
    assert ds.manifest["images"]["too_large"] == 4 and ds.manifest["images"]["attached"] == 3


def test_dataset_without_images_gets_a_null_image_path_column(tmp_path):
    ds = PreparedDataset(prepare(custom_dataset(tmp_path, {"a": None, "b": None, "c": None})))
    assert ds.items["image_path"].isna().all() and not (ds.root / "images").exists()
    assert ds.manifest["images"]["no_source"] == 3 and ds.manifest["images"]["attached"] == 0


# ------------------------------------------------------------------ the image map

@pytest.fixture
def mapped(tmp_path):
    """Items a..e without images of their own; a map in the posters' shape (item id -> movie id)."""
    shots = tmp_path / "shots" / "Movies"
    shots.mkdir(parents=True)
    for movie in (10, 11, 12):
        (shots / f"{movie}.jpg").write_bytes(jpeg((90, 120), (movie * 10, 0, 0)))
    amap = tmp_path / "map.tsv"
    amap.write_text("item\tmovie\thas_poster\n" "a\t10\t1\n" "b\t11\t1\n" "c\t12\t1\n" "d\t99\t0\n" "e\t\t0\n")
    cfg = custom_dataset(tmp_path / "ds", dict.fromkeys("abcdef"), image_map=str(amap),
                         image_dir=str(tmp_path / "shots"), image_map_columns="item,movie",
                         image_template="Movies/{}.jpg")
    return cfg, amap


def test_map_with_columns_and_template_attaches_images(mapped):
    cfg, _ = mapped
    ds = PreparedDataset(prepare(cfg))
    m = ds.manifest["images"]
    assert ds.items["image_path"].notna().to_dict() == {"a": True, "b": True, "c": True, "d": False,
                                                       "e": False, "f": False}
    assert ds.items.loc["a", "image"] == "Movies/10.jpg"  # the map's source, as given
    assert (m["attached"], m["missing_file"], m["no_source"], m["unknown_items_in_map"]) == (3, 1, 2, 0)
    with Image.open(ds.image_file("b")) as img:
        assert img.size == (90, 120) and _close(img.getpixel((5, 5)), (110, 0, 0))


def test_same_map_is_a_no_op_and_an_edited_map_rebuilds(mapped, caplog):
    cfg, amap = mapped
    out = prepare(cfg)
    with caplog.at_level(logging.INFO, logger="dataset.prepare"):
        prepare(cfg)
    assert "up to date" in caplog.text
    amap.write_text(amap.read_text().replace("c\t12", "c\t10"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dataset.prepare"):
        prepare(cfg)
    assert "image map" in caplog.text and "changed" in caplog.text
    ds = PreparedDataset(out)
    assert ds.items.loc["c", "image"] == "Movies/10.jpg"
    assert ds.image_file("c").read_bytes() == ds.image_file("a").read_bytes()


def test_unknown_map_items_are_counted_with_five_examples(tmp_path, caplog):
    (tmp_path / "p.png").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    amap = tmp_path / "map.csv"
    amap.write_text("item_id,image\n" "a,p.png\n" + "".join(f"ghost{k},p.png\n" for k in range(7)))
    cfg = custom_dataset(tmp_path / "ds", dict.fromkeys("abc"), image_map=str(amap))
    with caplog.at_level(logging.WARNING, logger="dataset.images"):
        ds = PreparedDataset(prepare(cfg))
    assert ds.manifest["images"]["unknown_items_in_map"] == 7 and ds.manifest["images"]["attached"] == 1
    msg = next(r.getMessage() for r in caplog.records if "not items of the dataset" in r.getMessage())
    assert "7 item ids" in msg and msg.count("ghost") == 5


def test_map_matching_no_item_is_an_error_naming_the_file(tmp_path):
    amap = tmp_path / "wrong_ids.csv"
    amap.write_text("item_id,image\n" "x1,p.png\n" "x2,p.png\n")
    cfg = custom_dataset(tmp_path / "ds", dict.fromkeys("abc"), image_map=str(amap))
    with pytest.raises(ValueError, match=r"wrong_ids\.csv: none of its 2 item ids"):
        prepare(cfg)


def test_map_without_the_named_columns_is_an_error(tmp_path):
    amap = tmp_path / "map.tsv"
    amap.write_text("id\tpicture\na\tp.png\n")
    cfg = custom_dataset(tmp_path / "ds", dict.fromkeys("abc"), image_map=str(amap))
    with pytest.raises(ValueError, match=r"map\.tsv: image map lacks column\(s\) \['item_id', 'image'\]"):
        prepare(cfg)


def test_template_without_a_map_is_rejected():
    with pytest.raises(ValueError, match="--image_template"):
        DataConfig(image_template="{}.jpg")


# ------------------------------------------------------------------ URLs (local server only)

class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict = {}
    good = jpeg((500, 250))

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/slow.jpg":
            time.sleep(1.0)  # past the client's timeout
        if self.path == "/flaky.jpg" and self.hits[self.path] == 1:
            self.send_error(503)
            return
        if self.path == "/missing.jpg" or self.path.startswith("/down/"):
            self.send_error(404)
            return
        body = b"\xff\xd8 garbage, not a JPEG" if self.path == "/corrupt.jpg" else self.good
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads, srv.block_on_close = True, False
    _Handler.hits = {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler.hits
    srv.shutdown()
    srv.server_close()


def test_urls_good_corrupt_timeout_404_and_retry(server, tmp_path):
    base, hits = server
    urls = {k: f"{base}/{k}.jpg" for k in ("good", "corrupt", "slow", "missing", "flaky")}
    cfg = custom_dataset(tmp_path, urls, image_download_timeout=0.3, image_download_retries=2)
    ds = PreparedDataset(prepare(cfg))
    m = ds.manifest["images"]
    assert (m["attached"], m["corrupt"], m["download_failed"]) == (2, 1, 2)
    assert set(ds.items.index[ds.items["image_path"].notna()]) == {"good", "flaky"}
    assert hits["/slow.jpg"] == 2 and hits["/flaky.jpg"] == 2  # retried (timeout, 503)
    assert hits["/missing.jpg"] == 1  # a 404 is not retried
    with Image.open(ds.image_file("good")) as img:
        assert img.size == (448, 224) and img.mode == "RGB"

    # resumable: a second run into a new folder fetches only what failed before, and decodes nothing
    before = dict(hits)
    again = prepare(DataConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "again")}))
    m2 = PreparedDataset(again).manifest["images"]
    assert {k: hits[k] - before.get(k, 0) for k in hits} == {"/good.jpg": 0, "/corrupt.jpg": 0, "/flaky.jpg": 0,
                                                             "/slow.jpg": 2, "/missing.jpg": 1}
    assert m2["processed"] == 0 and m2["attached"] == 2 and m2["download_reused"] == 3


def test_no_download_counts_urls_as_download_disabled(server, tmp_path):
    base, hits = server
    cfg = custom_dataset(tmp_path, {"a": f"{base}/good.jpg", "b": None, "c": None}, image_download=False)
    m = PreparedDataset(prepare(cfg)).manifest["images"]
    assert m["download_disabled"] == 1 and m["attached"] == 0 and hits == {}


def test_downloads_give_up_when_the_first_urls_all_fail(server, tmp_path, caplog):
    base, hits = server
    urls = [f"{base}/down/{k}.jpg" for k in range(60)]
    with caplog.at_level(logging.WARNING, logger="dataset.image_download"):
        res = download_all(urls, tmp_path, DownloadSettings(retries=1, workers=2, give_up_after=10))
    assert all(r.error for r in res.values()) and len(res) == 60
    assert 10 <= sum(hits.values()) <= 12  # at most one in flight per worker when the limit is reached
    assert "gave up on image downloads" in caplog.text


def test_default_image_cache_follows_the_environment(monkeypatch, tmp_path):
    from config import IMAGE_CACHE_ENV, REPO_ROOT, default_image_cache_dir

    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "shared-cache"))
    assert default_image_cache_dir() == tmp_path / "shared-cache"
    monkeypatch.delenv(IMAGE_CACHE_ENV)
    assert default_image_cache_dir() == REPO_ROOT / "data" / "image_cache"
