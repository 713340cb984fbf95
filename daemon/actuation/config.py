"""``[actuation]``: switches common to every knob, plus the keys each registered knob's model adds.

The table is composed from the knob registry: each knob's ``config_model`` checks its own
keys (``power_limit_min_w``, ``batch_size_max``, ...), which read as attributes of the
config (``cfg.power_limit_min_w``); a key no registered knob declares is an error. The
frame of such a table, :class:`PluginTables`, composes ``[collectors]`` from the collector
registry in the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from gputuned.daemon.actuation import knobs as plugins


class PluginTables(BaseModel):
    """A config table whose keys come from registered plugins, each plugin's checked by its own model.

    A subclass names its table, the keys it knows and how the plugins' models read them
    (:meth:`_compose`); an unknown key and every model's errors are reported together.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    table_name: ClassVar[str] = ""

    @model_validator(mode="wrap")
    @classmethod
    def _by_plugin(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.table_name} must be a table")
        known = cls._known_keys()
        errors = [InitErrorDetails(type="extra_forbidden", loc=(key,), input=value)
                  for key, value in data.items() if key not in known]
        values = cls._compose(data, errors)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(values)

    @classmethod
    def _known_keys(cls) -> Collection[str]:
        """The keys the table may hold: its own fields and those the plugins declare."""
        raise NotImplementedError

    @classmethod
    def _compose(cls, data: Mapping[str, Any], errors: list[InitErrorDetails]) -> dict[str, Any]:
        """The values the model is built from, each plugin's checked by its model; errors appended."""
        raise NotImplementedError


class ActuationConfig(PluginTables):
    """The ``[actuation]`` table: enabled knobs, dry-run, restore, and every knob's own keys."""

    table_name = "actuation"

    enabled: bool = True
    dry_run: bool = Field(False, description="log what would change, change nothing")
    knobs: list[str] = Field(default_factory=plugins.default_enabled, description="knobs that may change")
    restore_on_stop: bool = True
    job_ack_timeout_s: float = Field(5.0, gt=0, le=300, description="how long a job's restore waits for its ack")
    restore_out_of_bounds: Literal["leave", "default"] = Field(
        "leave", description="a recorded GPU original outside the hardware's or the config's bounds: "
                             "leave the knob as it is and report it, or reset it to the driver's default")

    @field_validator("knobs")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        known = plugins.names()
        for name in v:
            if name not in known:
                raise ValueError(f"actuation.knobs: unknown knob {name!r} (known: {', '.join(known)})")
        return v

    @classmethod
    def _known_keys(cls) -> Collection[str]:
        return set(cls.model_fields) | set(plugins.registry.config_fields())

    @classmethod
    def _compose(cls, data: Mapping[str, Any], errors: list[InitErrorDetails]) -> dict[str, Any]:
        values: dict[str, Any] = {k: v for k, v in data.items() if k in cls.model_fields}
        for knob in plugins.knobs():
            model = knob.config_model
            if model is None:
                continue
            try:
                checked = model.model_validate({k: data[k] for k in model.model_fields if k in data})
            except ValidationError as e:
                errors += [InitErrorDetails(type=d["type"], loc=d["loc"], input=d["input"],
                                            ctx=d.get("ctx", {})) for d in e.errors()]
                continue
            values.update(checked.model_dump())
        return values

    def knob_keys(self) -> dict[str, Any]:
        """The registered knobs' keys and their values."""
        return dict(self.model_extra or {})
