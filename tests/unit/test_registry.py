"""The one Registry: aliases, fixed keywords, lazy and plugin entries through one path, checked keywords, and
unknown names answered with the valid ones and the closest match."""

import pytest

from counterclip.errors import CounterclipError, UnknownNameError
from counterclip.registry import Registry


class Base:
    pass


def make():
    reg = Registry("widget", base=Base)

    @reg.register("round", "circle")
    @reg.register("square", fixed={"corners": 4})
    class Shape(Base):
        """A shape.

        More text."""

        def __init__(self, size=1, corners=0):
            self.size, self.corners = size, corners

    reg.add("lazy", "collections:OrderedDict")
    return reg, Shape


def test_aliases_fixed_keywords_and_order():
    reg, Shape = make()
    assert reg.names() == ["square", "round", "lazy"]
    assert reg.canonical("Circle") == "round" and "circle" in reg and "hexagon" not in reg
    s = reg.build("square", size=3)
    assert (s.size, s.corners) == (3, 4)
    assert reg.build("circle").corners == 0
    assert reg.table()[1] == ("round, circle", "A shape.")


def test_keywords_are_checked_against_the_signature_with_a_suggestion():
    reg, _ = make()
    with pytest.raises(CounterclipError, match=r"unknown argument 'sise'.*did you mean 'size'.*valid: size$"):
        reg.build("square", sise=2)  # 'corners' is fixed by the word, so not offered as valid
    assert reg.build("round", offered={"size": 5, "steps": 10}).size == 5  # offered: taken where accepted


def test_unknown_names_list_the_valid_ones_and_the_closest():
    reg, _ = make()
    with pytest.raises(UnknownNameError, match=r"unknown widget 'sqare'; valid: .*lazy.*round.*square.*"
                                               r"did you mean 'square'"):
        reg.resolve("sqare")


def test_lazy_and_plugin_entries_resolve_through_one_path_with_the_base_check():
    reg, _ = make()
    with pytest.raises(CounterclipError, match="does not subclass"):
        reg.resolve("lazy")  # OrderedDict is no Base
    with pytest.raises(CounterclipError, match="does not subclass"):
        reg.resolve("collections:Counter")
    assert reg.canonical("collections:Counter") == "collections:Counter"
    with pytest.raises(CounterclipError, match="cannot import"):
        reg.resolve("no_such_module_xyz:Thing")


def test_a_name_registered_twice_is_refused():
    reg, Shape = make()
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("circle", Shape)


def test_before_places_an_entry_ahead_of_the_one_it_derives_from():
    reg, Shape = make()
    reg.add("dot", Shape, before="round")
    assert reg.names() == ["square", "dot", "round", "lazy"]
