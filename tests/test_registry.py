"""The registry refuses duplicates and answers unknown names and arguments with suggestions."""

import pytest

from backbones import BACKBONES, create_backbone, list_backbones, register_backbone
from backbones.registry import Registry, RegistryError


def test_duplicate_registration_is_refused():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(RegistryError, match="'a' is already registered"):
        reg.register("a")(lambda: 2)


def test_registering_an_existing_backbone_name_is_refused():
    with pytest.raises(RegistryError, match="already registered"):
        register_backbone("resnet50")(lambda: None)


def test_list_with_wildcards():
    assert list_backbones("resnet5?") == ["resnet50", "resnet56"]
    assert list_backbones("*_plain") == [f"resnet{d}_plain" for d in (110, 20, 32, 44, 56)]
    assert set(list_backbones("preact_*")) == {f"preact_resnet{d}" for d in (20, 32, 44, 56, 110)}
    assert len(list_backbones()) == len(BACKBONES) >= 27


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean.*resnet50") as err:
        create_backbone("resnet5O")
    assert "unknown backbone 'resnet5O'" in str(err.value)


def test_unknown_kwarg_names_the_closest_option():
    with pytest.raises(TypeError, match="takes no argument 'out_indice'; did you mean out_indices"):
        create_backbone("resnet18", out_indice=(1, 2))
    with pytest.raises(
        TypeError, match="takes no argument 'output_strid'; did you mean output_stride"
    ):
        create_backbone("timm:resnet18", output_strid=8)


def test_unknown_timm_name_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean.*timm:resnet18"):
        create_backbone("timm:resnet18x")
