"""Where the bridge gets a model for each message: one loaded `Model`, or serve's
`ModelManager` (a model repository with hot swap), leased per message exactly as an HTTP
request leases it, so a swap applies to MQTT and HTTP alike and a retired version is only
released once its last message is answered."""
from __future__ import annotations

from typing import Any, Protocol

from .errors import MqttError


class Leased(Protocol):
    model_name: str
    version: str
    model: Any


class ModelSource(Protocol):
    def lease(self, model: str | None) -> Any:
        """Context manager yielding a `Leased` (name, version, model) for one message."""

    def describe(self) -> list[tuple[str, str]]:
        """(model, version) pairs currently served, for the status message."""


class _Fixed:
    """The lease of a model that is never swapped: its own context manager (no generator
    per message)."""

    def __init__(self, model: Any):
        self.model_name = str(model.name)
        self.version = str(model.version)
        self.model = model

    def __enter__(self) -> "_Fixed":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class SingleModel:
    """A model the application loaded itself; never swapped."""

    def __init__(self, model: Any):
        self._lease = _Fixed(model)

    def lease(self, model: str | None) -> _Fixed:
        if model is not None and model != self._lease.model_name:
            from ..serve.errors import RequestError
            raise RequestError(404, f"unknown model {model!r}; serving "
                                    f"{self._lease.model_name!r}")
        return self._lease

    def describe(self) -> list[tuple[str, str]]:
        return [(self._lease.model_name, self._lease.version)]


class RepositoryModels:
    """Leases from a `edgepack.runtime.serve.manager.ModelManager`."""

    def __init__(self, manager: Any):
        self.manager = manager
        self._default: str | None = None

    def _only(self) -> str:
        models = sorted(self.manager.snapshot())
        if len(models) == 1:
            return models[0]
        from ..serve.errors import RequestError
        if not models:
            raise RequestError(503, "no model is loaded yet")
        raise RequestError(404, f"the repository serves several models ({', '.join(models)}); "
                                "give the subscription a model (--model NAME)")

    def lease(self, model: str | None) -> Any:
        """The manager's own lease (a context manager). A subscription without a model
        uses the repository's only one, looked up once (copying the manager's snapshot per
        message cost more than the lease itself) and again after that name stops working."""
        if model is not None:
            return self.manager.lease(model)
        if self._default is None:
            self._default = self._only()
        return _Retrying(self, self._default)

    def describe(self) -> list[tuple[str, str]]:
        from ..serve.repository import version_key
        rows = []
        for name, versions in sorted(self.manager.snapshot().items()):
            if versions:
                rows.append((name, max(versions, key=version_key)))
        return rows


class _Retrying:
    """Enter the lease of the cached default model; if that model is gone (removed from the
    repository), look the only model up again once."""

    def __init__(self, source: RepositoryModels, name: str):
        self._source, self._name, self._lease = source, name, None

    def __enter__(self) -> Any:
        from ..serve.errors import RequestError
        try:
            self._lease = self._source.manager.lease(self._name)
            return self._lease.__enter__()
        except RequestError:
            self._source._default = None
            name = self._source._default = self._source._only()
            if name == self._name:
                raise
            self._lease = self._source.manager.lease(name)
            return self._lease.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._lease.__exit__(*exc)


def check_models(source: ModelSource, wanted: list[str | None]) -> None:
    """Fail at start-up, not at the first message, when a subscription names no model and
    the source serves several, or names one it does not serve."""
    served = {name for name, _ in source.describe()}
    for name in wanted:
        if name is None and len(served) > 1:
            raise MqttError(f"the repository serves several models ({', '.join(sorted(served))}); "
                            "say which one each subscription uses (--model NAME)")
        if name is not None and served and name not in served:
            raise MqttError(f"model {name!r} is not served; models: {', '.join(sorted(served))}")
