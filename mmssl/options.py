"""Commands' configs made of typed groups: ``GroupedConfig``.

A command whose options fall into sections (``mmssl train``: engine, data, model, negatives, one
group per recipe) declares a frozen dataclass whose fields are each a frozen dataclass, a group.
Flags keep their plain names (``--lr``, ``--preset``): a name belongs to one group only, and
``--help`` shows each group as a section (``GROUP_TITLE`` of the group, else its class name). Code
below the entry point takes the group it uses (``config.engine``, ``config.text_code``).

``from_flat(lr=..., preset=...)`` builds one from plain names (what the parser and a config file
give); ``replace(...)`` changes plain names; ``flatten_nested`` turns a config file's tables by
group (``[engine] lr = 1e-3``) into plain names; ``option(default, help)`` declares a field.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

G = TypeVar("G", bound="GroupedConfig")


def option(default: Any, help: str) -> Any:
    """A config field with its ``--help`` text (``field(default=..., metadata={"help": ...})``)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class GroupedConfig:
    """Base of a config whose every field is a group (a frozen dataclass)."""

    @classmethod
    def group_types(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def field_owner(cls) -> dict[str, str]:
        """Plain option name -> the group that declares it (each name in one group only)."""
        owner: dict[str, str] = {}
        for group, gtype in cls.group_types().items():
            for f in dataclasses.fields(gtype):
                if f.name in owner:
                    raise TypeError(f"{cls.__name__}: option {f.name!r} is in groups {owner[f.name]} and {group}")
                owner[f.name] = group
        return owner

    @classmethod
    def from_flat(cls: type[G], **values: Any) -> G:
        """The config from plain option names; a name no group declares is a ``TypeError``."""
        owner = cls.field_owner()
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown option {unknown[0]!r}")
        parts: dict[str, dict] = {g: {} for g in cls.group_types()}
        for name, value in values.items():
            parts[owner[name]][name] = value
        return cls(**{g: gtype(**parts[g]) for g, gtype in cls.group_types().items()})

    def flat(self) -> dict[str, Any]:
        return {k: v for g in self.group_types() for k, v in dataclasses.asdict(getattr(self, g)).items()}

    def replace(self: G, **values: Any) -> G:
        """A copy with these plain options changed (each in its own group)."""
        owner = type(self).field_owner()
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option {unknown[0]!r}")
        changes: dict[str, dict] = {}
        for name, value in values.items():
            changes.setdefault(owner[name], {})[name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **kw) for g, kw in changes.items()}
        return dataclasses.replace(self, **groups)


def flatten_nested(values: dict, groups: dict[str, type], where: str) -> dict:
    """A config file's values with tables named by group (``[engine]``) merged into plain names."""
    out: dict = {}
    for key, value in values.items():
        if key in groups and isinstance(value, dict):
            names = {f.name for f in dataclasses.fields(groups[key])}
            for name, v in value.items():
                name = name.replace("-", "_")
                if name not in names:
                    raise ValueError(f"{where}: unknown option {name!r} in [{key}]")
                out[name] = v
        else:
            out[key] = value
    return out
