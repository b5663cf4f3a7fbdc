"""Issue 10 (also): the default colours follow the class names; the legend lists nodata."""

from __future__ import annotations

from frugalvl.palette import NODATA_COLOUR, NODATA_NAME, class_colours, legend


def is_blue(c):
    return c[2] > 150 and c[2] > c[0] + 60 and c[2] >= c[1]


def is_green(c):
    return c[1] > c[0] + 30 and c[1] > c[2] + 30


def is_red(c):
    return c[0] > 150 and c[0] > c[1] + 80 and c[0] > c[2] + 80


def is_gray(c):
    return max(c) - min(c) <= 20 and 100 <= c[0] <= 210


def is_dark(c):
    return max(c) <= 100 and max(c) - min(c) <= 20


def test_names_pick_the_expected_colours():
    names = [
        "background",
        "water",
        "building,roof",
        "road",
        "vegetation",
        "tree",
        "river",
        "Lakes",
        "grass",
        "forest",
        "impervious surface",
        "low vegetation",
        "buildings",
        "sea",
    ]
    c = dict(zip(names, class_colours(names)))
    assert is_dark(c["background"])
    assert all(is_blue(c[n]) for n in ("water", "river", "Lakes", "sea"))
    assert all(is_green(c[n]) for n in ("vegetation", "tree", "grass", "forest", "low vegetation"))
    assert is_red(c["building,roof"]) and is_red(c["buildings"])
    assert is_gray(c["road"]) and is_gray(c["impervious surface"])
    assert len(set(c.values())) == len(names)  # several water classes still differ


def test_whole_words_only():
    street, tree = class_colours(["street", "tree"])
    assert is_gray(street) and is_green(tree)  # "street" contains "tree" but is a road
    (other_building,) = class_colours(["other building"])
    assert is_red(other_building)


def test_other_names_take_a_fixed_palette_deterministically():
    names = [f"class {i}" for i in range(300)]
    colours = class_colours(names)
    assert colours == class_colours(names)
    assert len(set(colours)) == 300 and NODATA_COLOUR not in colours
    assert all(0 <= v <= 255 and isinstance(v, int) for c in colours for v in c)
    # a named class does not shift the palette of the others
    assert class_colours(["water", "foo", "bar"])[1:] == class_colours(["foo", "bar"])


def test_legend_lists_nodata_only_when_present():
    assert [n for n, _ in legend(["water", "land"])] == ["water", "land"]
    rows = legend(["water", "land"], nodata=True)
    assert rows[-1] == (NODATA_NAME, NODATA_COLOUR) and len(rows) == 3


def test_overlay_and_label_files_use_the_named_colours(tmp_path):
    import numpy as np
    from PIL import Image

    from frugalvl.raster import RasterImage, overlay_image, write_labels

    rgb = np.full((20, 30, 3), 128, dtype=np.uint8)
    labels = np.zeros((20, 30), dtype=np.int64)
    labels[:, 15:] = 1
    nodata = np.zeros((20, 30), dtype=bool)
    nodata[:2] = True
    names = ["vegetation", "water"]
    rgba = np.array(overlay_image(rgb, labels, names, alpha=1.0, nodata_mask=nodata))
    assert rgba.shape[2] == 4
    img = rgba[..., :3]
    assert tuple(img[10, 5]) == class_colours(names)[0] and is_green(tuple(int(v) for v in img[10, 5]))
    assert is_blue(tuple(int(v) for v in img[10, 20]))
    # nodata: transparent (no solid frame), neutral gray underneath; every other pixel opaque
    assert tuple(img[0, 0]) == NODATA_COLOUR and rgba[0, 0, 3] == 0
    assert (rgba[:2, :30, 3] == 0).all() and (rgba[2:, :30, 3] == 255).all()
    # the legend has a third row, nodata, whose swatch is the nodata colour (rows are 18 px, from y=6)
    assert tuple(img[6 + 2 * 18 + 7, 30 + 8 + 7]) == NODATA_COLOUR
    without = np.array(overlay_image(rgb, labels, names, alpha=1.0))
    assert (without[..., 3] == 255).all()
    assert NODATA_COLOUR not in {tuple(p) for p in without[..., :3].reshape(-1, 3)}
    path = write_labels(tmp_path, RasterImage(rgb=rgb, path=tmp_path / "x.png"), labels, names)
    pal = Image.open(path).getpalette()[:6]
    assert [tuple(pal[:3]), tuple(pal[3:6])] == class_colours(names)
    assert Image.open(path).info.get("transparency") == 255  # nodata label transparent


def test_nodata_is_neutral_and_no_class_takes_it():
    r, g, b = NODATA_COLOUR
    assert r == g == b  # gray, not magenta
    assert NODATA_COLOUR not in class_colours([f"class {i}" for i in range(300)] + ["road", "street", "highway"])


def test_colour_table_follows_the_names_and_makes_nodata_transparent():
    from frugalvl.palette import colour_table

    names = ["water", "tree", "class x"]
    table = colour_table(names)
    assert [table[i][:3] for i in range(3)] == class_colours(names)
    assert all(table[i][3] == 255 for i in range(3)) and table[255][3] == 0
    assert 255 not in colour_table([f"c{i}" for i in range(255)])  # 255 is a class there (uint16 labels)


def test_raster_palette_wants_the_names():
    import pytest

    from frugalvl.raster import palette

    assert [tuple(int(v) for v in c) for c in palette(["water", "road"])] == class_colours(["water", "road"])
    with pytest.raises(TypeError):
        palette(3)  # type: ignore[arg-type]
