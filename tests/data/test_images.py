"""images:DIR: class folders, grey or colour, resizing, and one-line errors for broken folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glassbox.data import load_dataset
from glassbox.errors import UserError


def save(path: Path, size: tuple[int, int] = (6, 6), mode: str = "L", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, colour).save(path)
    return path


def make_folder(root: Path, mode: str = "L") -> Path:
    for k, cls in enumerate(["cat", "dog", "owl"]):
        for i in range(3):
            save(root / cls / f"{i}.png", mode=mode, value=40 * k + i)
    return root


def raises(source: str, *needles: str, **cfg) -> None:
    with pytest.raises(UserError) as err:
        load_dataset(source, **cfg)
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_grey_folder(tmp_path) -> None:
    ds = load_dataset(f"images:{make_folder(tmp_path / 'pets')}")
    assert (ds.kind, ds.task, ds.name) == ("image", "classification", "pets")
    assert ds.classes == ["cat", "dog", "owl"]
    assert tuple(ds.X.shape) == (9, 1, 6, 6) and ds.X.dtype == torch.float32
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.X[4, 0, 0, 0].item() == pytest.approx(41 / 255)
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0


def test_colour_if_any_image_is_colour(tmp_path) -> None:
    root = make_folder(tmp_path / "pets")
    save(root / "owl" / "colour.jpg", mode="RGB", value=200)
    ds = load_dataset(f"images:{root}")
    assert tuple(ds.X.shape) == (10, 3, 6, 6)
    assert ds.X[0, 0].equal(ds.X[0, 1])  # grey images are spread over the three channels


def test_rgb_files_with_grey_pixels_stay_grey(tmp_path) -> None:
    root = tmp_path / "x"
    for cls in ("a", "b"):
        Image.new("RGB", (5, 5), (90, 90, 90)).save(save(root / cls / "1.png"))
    assert load_dataset(f"images:{root}").X.shape[1] == 1


def test_resize_to_first_image_or_image_size(tmp_path) -> None:
    root = tmp_path / "sizes"
    save(root / "a" / "1.png", size=(8, 4))
    save(root / "b" / "2.bmp", size=(16, 16))
    ds = load_dataset(f"images:{root}")
    assert tuple(ds.X.shape) == (2, 1, 4, 8)  # (N, C, H, W) of the first image
    square = load_dataset(f"images:{root}", image_size=12)
    assert tuple(square.X.shape) == (2, 1, 12, 12)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    root = make_folder(tmp_path / "deep")
    Image.fromarray(np.full((6, 6), 32768, dtype=np.uint16)).save(root / "cat" / "deep.png")
    ds = load_dataset(f"images:{root}")
    assert ds.X[3, 0, 0, 0].item() == pytest.approx(128 / 255, abs=2 / 255)  # cat/deep.png sorts last


def test_hidden_and_non_image_files_are_ignored(tmp_path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    (root / ".cache").mkdir()
    (root / "__MACOSX").mkdir()
    assert len(load_dataset(f"images:{root}")) == 9


def test_missing_folder(tmp_path) -> None:
    raises(f"images:{tmp_path / 'nope'}", "not found", "nope")


def test_file_not_folder(tmp_path) -> None:
    path = save(tmp_path / "one.png")
    raises(f"images:{path}", "is a file", "one.png")


def test_no_class_folders(tmp_path) -> None:
    save(tmp_path / "loose.png")
    raises(f"images:{tmp_path}", "no class sub-folders")


def test_empty_class_folder(tmp_path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "zebra").mkdir()
    (root / "zebra" / "readme.txt").write_text("todo")
    raises(f"images:{root}", "zebra", "no images")


def test_single_class(tmp_path) -> None:
    save(tmp_path / "only" / "cat" / "1.png")
    raises(f"images:{tmp_path / 'only'}", "only one class", "'cat'")


def test_corrupt_image(tmp_path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    raises(f"images:{root}", "broken.png", "replace or delete")


def test_truncated_image(tmp_path) -> None:
    root = make_folder(tmp_path / "pets")
    good = save(root / "dog" / "cut.png", size=(64, 64))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:200])
    raises(f"images:{root}", "cut.png")
