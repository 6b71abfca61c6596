"""clove.drivers.registry: entry-point discovery behind an allowlist, hook validation, and
the typed registry's refusals."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import pluggy
import pytest

from clove.drivers import API_VERSION, Driver
from clove.drivers.registry import (
    ENTRY_POINT_GROUP,
    DriverRegistry,
    get_plugin_manager,
    hookimpl,
    installed_drivers,
    load_drivers,
)
from clove.errors import ConfigError
from clove.testing.loopback import LoopbackDriver


@dataclass(frozen=True, slots=True)
class Cfg:
    pass


class Good(Driver):
    Config = Cfg

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass


class OtherGood(Good):
    pass


class FutureApi(Good):
    api_version = API_VERSION + 1


class NoConfig(Driver):
    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass


def plugin(name: str, **hooks: Any) -> types.ModuleType:
    """A module-like plugin object carrying the given hook implementations."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        function.__name__ = hook_name
        setattr(module, hook_name, hookimpl(function))
    return module


def registering(*pairs: tuple[str, Any]) -> Any:
    def clove_register_drivers(registry: DriverRegistry) -> None:
        for kind, cls in pairs:
            registry.add(kind, cls)

    return clove_register_drivers


def manager_with(**plugins: types.ModuleType) -> pluggy.PluginManager:
    pm = get_plugin_manager()
    for name, module in plugins.items():
        pm.register(module, name=name)
    return pm


# -- discovery -----------------------------------------------------------------------------------


def test_loopback_is_found_through_its_entry_point() -> None:
    assert ENTRY_POINT_GROUP == "clove.drivers"
    assert "loopback" in installed_drivers()
    registry = load_drivers(["loopback"])
    assert registry.kinds() == ["loopback"]
    assert "loopback" in registry
    assert registry.get("loopback") is LoopbackDriver


def test_only_the_allowlisted_plugins_are_loaded() -> None:
    pm = get_plugin_manager()
    load_drivers(["loopback"], pm=pm)
    assert [name for name, _ in pm.list_name_plugin()] == ["loopback"]


def test_an_empty_allowlist_loads_nothing() -> None:
    pm = get_plugin_manager()
    registry = load_drivers([], pm=pm)
    assert registry.kinds() == []
    assert pm.list_name_plugin() == []


def test_loading_twice_on_one_manager_is_harmless() -> None:
    pm = get_plugin_manager()
    load_drivers(["loopback"], pm=pm)
    registry = load_drivers(["loopback", "loopback"], pm=pm)
    assert registry.kinds() == ["loopback"]


def test_each_call_gets_a_fresh_manager() -> None:
    assert get_plugin_manager() is not get_plugin_manager()
    assert get_plugin_manager().list_name_plugin() == []


def test_unknown_plugin_names_the_group_and_what_is_installed() -> None:
    with pytest.raises(ConfigError) as info:
        load_drivers(["no-such-driver"])
    message = info.value.message
    assert message.startswith("driver plugin 'no-such-driver' is not installed")
    assert "entry point group clove.drivers" in message
    assert f"installed: {', '.join(installed_drivers())}" in message
    assert "loopback" in message
    assert info.value.details == {"plugin": "no-such-driver"}


def test_a_plugin_that_fails_to_load_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = get_plugin_manager()

    def explode(group: str, name: str | None = None) -> int:
        assert (group, name) == (ENTRY_POINT_GROUP, "broken")
        raise ImportError("No module named 'vendor_sdk'")

    monkeypatch.setattr(pm, "load_setuptools_entrypoints", explode)
    with pytest.raises(ConfigError) as info:
        load_drivers(["broken"], pm=pm)
    assert (
        info.value.message
        == "driver plugin 'broken' failed to load: ImportError: No module named 'vendor_sdk'"
    )
    assert info.value.details == {"plugin": "broken"}


def test_a_hook_with_a_wrong_signature_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = get_plugin_manager()

    def clove_register_drivers(reg: DriverRegistry) -> None:  # the spec's argument is "registry"
        pass

    bad = plugin("badsig", clove_register_drivers=clove_register_drivers)

    def load(group: str, name: str | None = None) -> int:
        pm.register(bad, name=name)  # what pluggy does with the entry point's module
        return 1

    monkeypatch.setattr(pm, "load_setuptools_entrypoints", load)
    with pytest.raises(ConfigError) as info:
        load_drivers(["badsig"], pm=pm)
    assert info.value.message.startswith("driver plugin 'badsig' failed to load: PluginValidationError: ")
    assert "Argument(s) {'reg'} are declared in the hookimpl" in info.value.message


def test_a_hookimpl_without_a_spec_is_a_config_error() -> None:
    def clove_no_such_hook() -> None:
        pass

    pm = manager_with(rogue=plugin("rogue", clove_no_such_hook=clove_no_such_hook))
    with pytest.raises(ConfigError) as info:
        load_drivers(["rogue"], pm=pm)
    assert info.value.message.startswith("driver plugin 'rogue': ")
    assert "unknown hook 'clove_no_such_hook'" in info.value.message


def test_registered_plugins_contribute_their_kinds() -> None:
    pm = manager_with(
        one=plugin("one", clove_register_drivers=registering(("alpha", Good))),
        two=plugin("two", clove_register_drivers=registering(("beta", OtherGood), ("gamma", Good))),
    )
    registry = load_drivers(["one", "two", "loopback"], pm=pm)
    assert registry.kinds() == ["alpha", "beta", "gamma", "loopback"]
    assert registry.get("beta") is OtherGood


def test_a_plugin_registering_badly_is_a_config_error() -> None:
    pm = manager_with(bad=plugin("bad", clove_register_drivers=registering(("thing", dict))))
    with pytest.raises(
        ConfigError, match=r"^driver plugins: driver kind 'thing': .* is not a clove.drivers.Driver subclass"
    ):
        load_drivers(["bad"], pm=pm)


def test_two_plugins_claiming_one_kind_is_a_config_error() -> None:
    pm = manager_with(
        one=plugin("one", clove_register_drivers=registering(("can", Good))),
        two=plugin("two", clove_register_drivers=registering(("can", OtherGood))),
    )
    with pytest.raises(
        ConfigError, match=r"driver kind 'can' is registered twice \((Good, OtherGood|OtherGood, Good)\)"
    ):
        load_drivers(["one", "two"], pm=pm)


# -- the registry --------------------------------------------------------------------------------


def test_registry_add_get_kinds_contains() -> None:
    registry = DriverRegistry()
    registry.add("b", Good)
    registry.add("a", OtherGood)
    assert registry.kinds() == ["a", "b"]
    assert registry.get("a") is OtherGood
    assert "b" in registry
    assert "c" not in registry
    assert 1 not in registry
    with pytest.raises(KeyError):
        registry.get("c")


def test_registry_accepts_the_same_class_twice() -> None:
    registry = DriverRegistry()
    registry.add("k", Good)
    registry.add("k", Good)
    assert registry.kinds() == ["k"]


def test_registry_refuses_a_duplicate_kind() -> None:
    registry = DriverRegistry()
    registry.add("k", Good)
    with pytest.raises(ValueError, match=r"driver kind 'k' is registered twice \(Good, OtherGood\)"):
        registry.add("k", OtherGood)
    assert registry.get("k") is Good


@pytest.mark.parametrize("cls", [dict, object, Good(Cfg()), "Good", None])
def test_registry_refuses_non_drivers(cls: Any) -> None:
    with pytest.raises(ValueError, match="is not a clove.drivers.Driver subclass"):
        DriverRegistry().add("k", cls)


@pytest.mark.parametrize("kind", ["", None, 5])
def test_registry_refuses_bad_kinds(kind: Any) -> None:
    with pytest.raises(ValueError, match="a driver kind must be a non-empty string"):
        DriverRegistry().add(kind, Good)


def test_registry_refuses_another_api_version() -> None:
    with pytest.raises(ValueError, match="targets driver API") as info:
        DriverRegistry().add("k", FutureApi)
    assert (
        str(info.value)
        == f"driver kind 'k': FutureApi targets driver API {API_VERSION + 1}, this Clove has {API_VERSION}"
    )


def test_registry_refuses_a_driver_without_config() -> None:
    registry = DriverRegistry()
    with pytest.raises(ValueError, match="driver kind 'k': NoConfig has no Config dataclass"):
        registry.add("k", NoConfig)
    assert registry.kinds() == []
