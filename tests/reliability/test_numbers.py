"""Issue 10 item 7: numeric options are range-checked at parse time, and settings refuse nonsense values."""

from __future__ import annotations

import argparse
import math

import pytest

from frugalvl.commands import _types as t
from frugalvl.presets import list_presets, load_preset
from frugalvl.segment.segearth_ov import SegEarthOVSettings
from frugalvl.segment.segearth_ov3 import SegEarthOV3Settings


@pytest.mark.parametrize(
    "parse,good,bad",
    [
        (t.positive_int, {"1": 1, " 448 ": 448}, ["0", "-3", "1.5", "foo", ""]),
        (t.nonnegative_int, {"0": 0, "7": 7}, ["-1", "x"]),
        (t.positive_float, {"0.5": 0.5, "50": 50.0}, ["0", "-1", "nan", "inf", "abc"]),
        (t.nonnegative_float, {"0": 0.0, "2.5": 2.5}, ["-0.1", "nan"]),
        (t.probability, {"0": 0.0, "1": 1.0, "0.25": 0.25}, ["2", "-0.1", "nan", "1.0001"]),
        (t.finite_float, {"-0.3": -0.3, "0": 0.0}, ["nan", "-inf", "inf", "x"]),
        (t.int_range(2, 10), {"2": 2, "10": 10}, ["1", "11"]),
        (t.float_range(high=1.0), {"-5": -5.0, "1": 1.0}, ["1.5", "nan"]),
        (t.int_or_choice("native"), {"448": 448, "Native": "native"}, ["0", "foo", "-448"]),
    ],
)
def test_argument_types(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert "\n" not in str(info.value) and str(info.value)


def test_argparse_shows_the_types_message(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--prob-thd", type=t.probability)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--prob-thd", "2"])
    assert info.value.code == 2
    assert "argument --prob-thd: 2 is not allowed: give a number from 0 to 1" in capsys.readouterr().err

    def library_parse(text: str) -> int:
        raise ValueError(f"{text!r} is not a number of pixels or 'native'")

    parser.add_argument("--side", type=t.from_parser(library_parse))
    with pytest.raises(SystemExit):
        parser.parse_args(["--side", "foo"])
    assert "argument --side: 'foo' is not a number of pixels or 'native'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad,field",
    [
        (dict(slide_crop=0), "slide_crop"),
        (dict(slide_stride=0), "slide_stride"),
        (dict(slide_crop=64, slide_stride=128), "slide_stride"),
        (dict(long_side=0), "long_side"),
        (dict(cls_lambda=math.nan), "cls_lambda"),
        (dict(cls_lambda=math.inf), "cls_lambda"),
        (dict(prob_thd=2.0), "prob_thd"),
        (dict(prob_thd=-0.1), "prob_thd"),
        (dict(prob_thd=math.nan), "prob_thd"),
        (dict(logit_scale=0.0), "logit_scale"),
        (dict(logit_scale=-50.0), "logit_scale"),
        (dict(window_batch=0), "window_batch"),
        (dict(bg_idx=-1), "bg_idx"),
        (dict(attention="nope"), "attention"),
    ],
)
def test_segearth_ov_settings_refuse(bad, field):
    """Each message starts with the field's name, so the CLI can name the option."""
    with pytest.raises(ValueError, match=f"^{field} "):
        SegEarthOVSettings(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        dict(slide_crop=-1),
        dict(slide_crop=100, slide_stride=200),
        dict(prob_thd=2.0),
        dict(prob_thd=math.nan),
        dict(confidence_threshold=1.5),
        dict(bg_idx=-1),
        dict(prompt_chunk=0),
    ],
)
def test_segearth_ov3_settings_refuse(bad):
    with pytest.raises(ValueError):
        SegEarthOV3Settings(**bad)


def test_defaults_and_every_preset_stay_valid():
    assert SegEarthOVSettings(long_side=None, window_batch=4, slide_crop=224, slide_stride=224).long_side is None
    assert SegEarthOV3Settings(slide_crop=0, slide_stride=0).slide_crop == 0
    for name in list_presets():
        if "segearth_ov" in load_preset(name):  # the SegEarth-OV3 v2 datasets have no SegEarth-OV config
            SegEarthOVSettings.from_preset(name)
        SegEarthOV3Settings.from_preset(name)
