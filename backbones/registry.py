"""A small generic name -> builder registry, shared by backbones, heads and tasks.

Why not a dict: a registry refuses duplicate names (two modules silently overwriting each
other's model is a bug that only shows as wrong numbers), and an unknown name or keyword
argument gets an error that lists the closest valid choices instead of a bare ``KeyError``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class OptionError(ValueError):
    """A model option outside what it accepts (a norm name, an out_indices entry, a weights
    file that is not a state dict). The tools print it as one ``error:`` line; ``ValueError``
    stays for programming errors such as a missing argument at run time."""


class RegistryError(KeyError):
    """An unknown or duplicate name; ``str()`` gives the plain message (KeyError quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def close_matches(word: str, choices: list[str], n: int = 5) -> list[str]:
    """The choices closest to ``word``: difflib ratio first, then shared-prefix matches."""
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    for choice in choices:
        if len(found) >= n:
            break
        if choice not in found and (choice.startswith(word) or word.startswith(choice)):
            found.append(choice)
    return found


class Registry(Generic[T]):
    """Maps names to builder callables.

    >>> models = Registry("backbone")
    >>> @models.register()
    ... def tiny(*, width: int = 8): ...
    >>> models.create("tiny", width=4)
    """

    def __init__(self, kind: str, listing: str = "") -> None:
        """kind: what is registered, for messages; listing: how a user lists the entries
        (e.g. a command), named when an unknown name is asked for and there are many."""
        self.kind, self.listing = kind, listing
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that records ``fn`` under ``name`` (default: ``fn.__name__``)."""

        def add(fn: T) -> T:
            key = name or fn.__name__
            if key in self._entries:
                raise RegistryError(
                    f"{self.kind} {key!r} is already registered "
                    f"(by {self._entries[key].__module__}); pick another name"
                )
            self._entries[key] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        """The builder registered under ``name``; an unknown name lists the closest ones."""
        try:
            return self._entries[name]
        except KeyError:
            names = sorted(self._entries)
            hint = close_matches(name, names)
            did_you_mean = f"; did you mean {', '.join(hint)}?" if hint else ""
            known = (
                f"expected one of {', '.join(names)}"
                if len(names) <= 12
                else f"{len(names)} registered; {self.listing or 'list them with .list()'}"
            )
            raise RegistryError(f"unknown {self.kind} {name!r}{did_you_mean} ({known})") from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; an argument the builder does not take is named."""
        builder = self.get(name)
        params = inspect.signature(builder).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if not takes_any:
            for key in kwargs:
                if key not in params:
                    hint = close_matches(key, list(params))
                    did_you_mean = f"; did you mean {', '.join(hint)}?" if hint else ""
                    raise TypeError(
                        f"{self.kind} {name!r} takes no argument {key!r}{did_you_mean} "
                        f"(accepted: {', '.join(params)})"
                    )
        return builder(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
