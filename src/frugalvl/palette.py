"""Colours for label maps and overlays: meaningful where the class name says what it is.

Classes whose names name a common land cover get the colour a map reader expects (water blue,
vegetation green, buildings red, roads gray, background near-black, ...); every other class takes
the next colour of a fixed palette of distinct, muted hues, so the same vocabulary always gets the same
colours. This is the one palette of every output: the colour tables of untiled and tiled label files
(:func:`colour_table`), the overlays, the app's map and legend, and so the QGIS plugin, which reads the
label file's colour table. Pixels without data are transparent (alpha 0 in overlays and colour tables);
the legend lists them as ``nodata`` with :data:`NODATA_COLOUR`, a neutral gray no class takes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

RGB = tuple[int, int, int]

NODATA_COLOUR: RGB = (128, 128, 128)  # neutral gray, behind transparency: no class is drawn in it
NODATA_NAME = "nodata"
NODATA_INDEX = 255  # the label value of pixels without data (frugalvl.raster.NODATA_LABEL)

# Families of land cover: the words that name them (matched as whole words, singular or plural) and
# their shades; a second class of the same family gets the next shade, so no two classes share a colour.
_FAMILIES: list[tuple[tuple[str, ...], tuple[RGB, ...]]] = [
    (
        ("water", "river", "lake", "sea", "ocean", "pond", "reservoir", "canal", "stream", "wetland"),
        ((0, 90, 255), (0, 170, 255), (40, 50, 170), (90, 200, 230)),
    ),
    (("tree", "forest", "woodland"), ((0, 110, 30), (40, 140, 60), (20, 80, 40))),
    (
        ("vegetation", "grass", "grassland", "meadow", "shrub", "shrubland", "park", "lawn", "plant"),
        ((90, 200, 60), (150, 220, 90), (60, 170, 100)),
    ),
    (
        ("agriculture", "agricultural", "farmland", "crop", "cropland", "field", "rangeland"),
        ((200, 220, 60), (170, 200, 40), (220, 230, 120)),
    ),
    (
        ("building", "house", "roof", "rooftop", "residential", "industrial", "commercial", "urban"),
        ((220, 40, 40), (180, 30, 60), (240, 100, 80), (200, 80, 110)),
    ),
    (
        ("road", "street", "highway", "impervious", "pavement", "parking", "sidewalk", "railway", "rail", "bridge"),
        ((150, 150, 150), (190, 190, 190), (120, 120, 135)),
    ),
    (
        ("bare", "barren", "bareland", "soil", "sand", "desert", "rock", "dirt"),
        ((190, 140, 80), (160, 110, 60), (220, 190, 130)),
    ),
    (("cloud", "snow", "ice", "glacier"), ((235, 240, 250), (205, 215, 235))),
    (("car", "vehicle", "truck", "bus"), ((255, 215, 0), (255, 170, 0))),
    (("ship", "boat", "harbor", "harbour"), ((255, 120, 0), (230, 90, 40))),
    (("shadow",), ((70, 40, 110),)),
    # last, so "other building" is a building
    (
        ("background", "clutter", "other", "others", "unknown", "void", "unlabeled", "unlabelled"),
        ((20, 20, 20), (64, 64, 64), (96, 96, 96)),
    ),
]

# For all other classes, in order: distinct hues, none of them one of the families' colours above.
_FIXED: tuple[RGB, ...] = (
    (145, 80, 170),
    (80, 170, 180),
    (110, 80, 50),
    (0, 128, 128),
    (200, 180, 230),
    (140, 30, 30),
    (160, 210, 180),
    (128, 128, 0),
    (230, 200, 170),
    (40, 60, 130),
    (230, 170, 190),
    (170, 110, 40),
    (240, 235, 190),
    (40, 170, 140),
    (170, 60, 110),
    (110, 110, 220),
    (230, 140, 140),
    (150, 80, 0),
)

_WORD = re.compile(r"[a-z]+")


def _words(name: str) -> set[str]:
    words = set(_WORD.findall(name.lower()))
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}  # "buildings" -> "building"


def _family(name: str) -> int | None:
    """Index of the first family one of whose words is in ``name``, else None."""
    words = _words(name)
    for i, (keys, _) in enumerate(_FAMILIES):
        if words.intersection(keys):
            return i
    return None


def _extra_colour(k: int) -> RGB:
    """The ``k``-th colour after the fixed palette: golden-ratio hues, deterministic."""
    import colorsys

    hue = (0.13 + 0.618033988749895 * k) % 1.0
    light = 0.45 + 0.15 * (k % 3) / 2
    r, g, b = colorsys.hls_to_rgb(hue, light, 0.55)
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def class_colours(names: Sequence[str]) -> list[RGB]:
    """One RGB colour per class name, all different: by land-cover family first, then a fixed palette."""
    used: set[RGB] = {NODATA_COLOUR}
    colours: list[RGB | None] = []
    for name in names:
        family = _family(name)
        shade = None
        if family is not None:
            shade = next((c for c in _FAMILIES[family][1] if c not in used), None)
        if shade is not None:
            used.add(shade)
        colours.append(shade)
    fixed = iter(c for c in _FIXED if c not in used)
    k = 0
    result: list[RGB] = []
    for colour in colours:
        if colour is None:
            colour = next(fixed, None)
            while colour is None or colour in used:
                colour = _extra_colour(k)
                k += 1
            used.add(colour)
        result.append(colour)
    return result


def legend(names: Sequence[str], nodata: bool = False) -> list[tuple[str, RGB]]:
    """``(label, colour)`` rows of a legend: every class, then ``nodata`` when the image has any."""
    rows = list(zip(names, class_colours(names)))
    if nodata:
        rows.append((NODATA_NAME, NODATA_COLOUR))
    return rows


def colour_table(names: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """The RGBA colour table of a label file: each class index its colour, and :data:`NODATA_INDEX`
    transparent (label COGs, untiled GeoTIFFs; QGIS and GDAL read it)."""
    table = {i: (*c, 255) for i, c in enumerate(class_colours(names))}
    if len(names) < NODATA_INDEX:
        table[NODATA_INDEX] = (*NODATA_COLOUR, 0)
    return table
