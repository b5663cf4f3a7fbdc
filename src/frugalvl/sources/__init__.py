"""Where a scene's pixels come from besides a plain file: an area of interest (:mod:`.aoi`), STAC items,
one or several (:mod:`.stac`), tile services (:mod:`.xyz`, :mod:`.wmts`, sharing the fetch path of
:mod:`.tiles`), bands chosen by name (:mod:`.bands`), and the view that puts them on one grid
(:mod:`.grid`). The scene path (:mod:`frugalvl.segment.scene_read`) opens every source through
:mod:`.open`, so all of them get the same tiling, resume, outputs and records."""
