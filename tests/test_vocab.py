import pytest

from frugalvl.errors import UserError
from frugalvl.vocab import Vocabulary, templates


def test_parse_string_with_synonyms():
    v = Vocabulary.parse("background; building,roof,house ;road")
    assert v.names == ["background", "building", "road"]
    assert v.queries == ["background", "building", "roof", "house", "road"]
    assert v.query_to_class == [0, 1, 1, 1, 2]
    assert len(v) == 3


def test_class_file_official_strip_keeps_inner_spaces(tmp_path):
    f = tmp_path / "cls.txt"
    f.write_text("background\ntree, forest\nwater\n")
    official = Vocabulary.from_file(f)  # SegEarth-OV strips only the newline
    assert official.queries == ["background", "tree", " forest", "water"]
    ov3 = Vocabulary.from_file(f, strip="whitespace")
    assert ov3.queries == ["background", "tree", "forest", "water"]


def test_blank_lines_are_not_classes(tmp_path):
    f = tmp_path / "cls.txt"
    f.write_text("a\n\nb\n\n")
    assert Vocabulary.from_file(f).names == ["a", "b"]


@pytest.mark.parametrize("text", ["", " ; ", "a;b,,c"])
def test_empty_vocabulary_or_name_is_a_user_error(text):
    with pytest.raises(UserError):
        Vocabulary.parse(text)


def test_missing_class_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Vocabulary.from_file(tmp_path / "nope.txt")


def test_templates():
    t = templates("imagenet80")
    assert len(t) == 80 and t[0]("ship") == "a bad photo of a ship."
    assert templates("none")[0]("ship") == "ship"
    with pytest.raises(UserError):
        templates("nope")
