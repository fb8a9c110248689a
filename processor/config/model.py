"""The top-level Config: component sections keyed by `type[/name]` ids, the service pipeline, accessors."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from processor.config.components import (
    EXPORTERS,
    PROCESSORS,
    RECEIVERS,
    AnomalyConfig,
    ClickHouseExporter,
    DashboardsConfig,
    Frozen,
    KafkaExporter,
    KafkaReceiver,
    NarratorConfig,
    NonEmptyStr,
    OtlpReceiver,
    PrometheusExporter,
    ServiceGraphConfig,
    WindowsConfig,
)
from processor.config.extensions import EXTENSIONS, UiConfig

# The collector's component id grammar: `type` or `type/name`.
_ID_RE = re.compile(r"(?P<type>[A-Za-z][A-Za-z0-9_]*)(?:/(?P<name>[^/\s]+))?")

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def config_error(loc: Loc, message: str, value: Any = None) -> InitErrorDetails:
    """One error line for ValidationError.from_exception_data; the message is kept verbatim."""
    return InitErrorDetails(
        type=PydanticCustomError("config", "{message}", {"message": message}),
        loc=loc,
        input=value,
    )


def relocate(error: ValidationError, prefix: Loc) -> list[InitErrorDetails]:
    """Re-home a nested model's errors under `prefix`, keeping each type and message."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], "{message}", {"message": e["msg"]}),
            loc=(*prefix, *e["loc"]),
            input=e["input"],
        )
        for e in error.errors()
    ]


def _section(kind: str, registry: Mapping[str, type[Frozen]]) -> Callable[[Any], dict[str, Any]]:
    """Validator for `receivers:` etc.: the type part of each id picks the model."""
    supported = ", ".join(registry)

    def validate(raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"expected a mapping of {kind} ids to settings")
        out: dict[str, Any] = {}
        errors: list[InitErrorDetails] = []
        for key, settings in raw.items():
            cid = str(key)  # YAML may give `1:` or `null:`; ids are strings
            match = _ID_RE.fullmatch(cid)
            if match is None:
                errors.append(config_error((cid,), "invalid component id (use type or type/name)"))
            elif (model := registry.get(match["type"])) is None:
                message = f"unknown {kind} type {match['type']!r} (supported: {supported})"
                errors.append(config_error((cid,), message))
            else:
                try:
                    # Collector style: `otlp:` with no value means all defaults.
                    out[cid] = model.model_validate({} if settings is None else settings)
                except ValidationError as exc:
                    errors.extend(relocate(exc, (cid,)))
        if errors:
            raise ValidationError.from_exception_data(kind, errors)
        return out

    return validate


def _dump_section(section: Mapping[str, BaseModel], info: SerializationInfo) -> dict[str, Any]:
    return {cid: model.model_dump(mode=info.mode) for cid, model in section.items()}


_dump = PlainSerializer(_dump_section)
Receivers = Annotated[
    dict[str, KafkaReceiver | OtlpReceiver], PlainValidator(_section("receiver", RECEIVERS)), _dump
]
Processors = Annotated[
    dict[str, ServiceGraphConfig | WindowsConfig | AnomalyConfig | NarratorConfig | DashboardsConfig],
    PlainValidator(_section("processor", PROCESSORS)),
    _dump,
]
Extensions = Annotated[
    dict[str, UiConfig], PlainValidator(_section("extension", EXTENSIONS)), _dump,
]
Exporters = Annotated[
    dict[str, ClickHouseExporter | PrometheusExporter | KafkaExporter],
    PlainValidator(_section("exporter", EXPORTERS)),
    _dump,
]


def _reference_errors(data: Any) -> list[InitErrorDetails]:
    """Every pipeline entry (and service.extensions entry) must name a component defined in
    its section, once."""
    try:
        pipeline = data["service"]["pipelines"]["traces"]
    except (TypeError, KeyError):
        return []  # the model reports the missing or malformed service block
    errors: list[InitErrorDetails] = []
    lists: list[tuple[str, Any, tuple[str | int, ...]]] = [
        (kind, pipeline.get(kind) if isinstance(pipeline, Mapping) else None, ("service", "pipelines", "traces", kind))
        for kind in ("receivers", "processors", "exporters")]
    lists.append(("extensions", data["service"].get("extensions"), ("service", "extensions")))
    for kind, ids, where in lists:
        if not isinstance(ids, list | tuple):
            continue
        defined = data.get(kind) or {}
        seen: set[Any] = set()
        for i, cid in enumerate(ids):
            loc = (*where, i)
            if not isinstance(cid, str):
                continue  # the Pipeline model reports the type error
            if isinstance(defined, Mapping) and cid not in defined:
                errors.append(config_error(loc, f"{cid!r} is not defined under {kind}", cid))
            elif cid in seen:
                errors.append(config_error(loc, f"{cid!r} is listed twice", cid))
            seen.add(cid)
    return errors


class Pipeline(Frozen):
    receivers: tuple[NonEmptyStr, ...] = Field(min_length=1)
    processors: tuple[NonEmptyStr, ...] = ()
    exporters: tuple[NonEmptyStr, ...] = Field(min_length=1)


class Pipelines(Frozen):
    traces: Pipeline


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class Logs(Frozen):
    # Collector configs write INFO/DEBUG; accept any case.
    level: Annotated[Literal["debug", "info", "warn", "error"], BeforeValidator(_lower)] = "info"


class Telemetry(Frozen):
    logs: Logs = Logs()


class Service(Frozen):
    extensions: tuple[NonEmptyStr, ...] = ()  # which `extensions:` run (the collector's key)
    pipelines: Pipelines
    telemetry: Telemetry = Telemetry()


class Config(Frozen):
    """A validated config. Sections map component id -> model; use the accessors below."""

    receivers: Receivers = {}
    processors: Processors = {}
    exporters: Exporters = {}
    extensions: Extensions = {}
    service: Service

    @model_validator(mode="wrap")
    @classmethod
    def _link(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        # References are checked on the raw tree (ids are keys, validation does not change
        # them) so an undefined id is reported together with any bad values.
        errors = _reference_errors(data)
        try:
            config = handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                "Config", relocate(exc, ()) + errors
            ) from None
        if errors:
            raise ValidationError.from_exception_data("Config", errors)
        if config.narrator is not None and config.anomaly is None:
            raise ValueError("processors.narrator narrates the incidents of processors.anomaly: "
                             "list an anomaly processor in service.pipelines.traces.processors too")
        if config.dashboards is not None and config.dashboards.generator == "model" and config.narrator is None:
            raise ValueError("processors.dashboards.generator: model uses the models of processors.narrator "
                             "(its `dashboard` route): list a narrator too, or use generator: rules")
        return config._resolve_inherited()

    def _resolve_inherited(self) -> Config:
        """Fill settings documented as 'empty = inherit from the kafka receiver'."""
        source = self._kafka_source
        receivers = {
            cid: r.model_copy(
                update={
                    "topic": r.topic or source.traces.topics[0],
                    "encoding": r.encoding or source.traces.encoding,
                }
            )
            if isinstance(r, OtlpReceiver)
            else r
            for cid, r in self.receivers.items()
        }
        exporters = {
            cid: e.model_copy(update={"brokers": e.brokers or source.brokers})
            if isinstance(e, KafkaExporter)
            else e
            for cid, e in self.exporters.items()
        }
        return self.model_copy(update={"receivers": receivers, "exporters": exporters})

    @property
    def _kafka_source(self) -> KafkaReceiver:
        """Where inherited settings come from: the pipeline's kafka receiver, else any."""
        return self.kafka or self._first(self.receivers, KafkaReceiver) or KafkaReceiver()

    @staticmethod
    def _first(components: Mapping[str, Any], model: type[M], ids: Any = None) -> M | None:
        """First component of `model`'s type, among `ids` (in order) or all defined ones."""
        for cid in components if ids is None else ids:
            found = components.get(cid)
            if isinstance(found, model):
                return found
        return None

    # --- accessors: what the traces pipeline actually uses ------------------------------

    @property
    def kafka(self) -> KafkaReceiver | None:
        return self._first(self.receivers, KafkaReceiver, self.service.pipelines.traces.receivers)

    @property
    def otlp(self) -> OtlpReceiver | None:
        """The gateway's receiver: the pipeline's otlp receiver, else any defined one (the
        gateway feeds Kafka, so listing it in the pipeline is optional)."""
        used = self.service.pipelines.traces.receivers
        return self._first(self.receivers, OtlpReceiver, used) or self._first(
            self.receivers, OtlpReceiver
        )

    @property
    def servicegraph(self) -> ServiceGraphConfig:
        """The pipeline's servicegraph processor, or the defaults (pairing always runs)."""
        used = self.service.pipelines.traces.processors
        return self._first(self.processors, ServiceGraphConfig, used) or ServiceGraphConfig()

    @property
    def windows(self) -> WindowsConfig:
        """The pipeline's windows processor, or the defaults (windowing always runs)."""
        used = self.service.pipelines.traces.processors
        return self._first(self.processors, WindowsConfig, used) or WindowsConfig()

    @property
    def anomaly(self) -> AnomalyConfig | None:
        """The pipeline's anomaly processor; None when the pipeline does not list one."""
        used = self.service.pipelines.traces.processors
        return self._first(self.processors, AnomalyConfig, used)

    @property
    def narrator(self) -> NarratorConfig | None:
        """The pipeline's narrator (stage 3); None when the pipeline does not list one."""
        used = self.service.pipelines.traces.processors
        return self._first(self.processors, NarratorConfig, used)

    @property
    def ui(self) -> UiConfig | None:
        """The web UI extension; None unless service.extensions lists it."""
        return self._first(self.extensions, UiConfig, self.service.extensions)

    @property
    def dashboards(self) -> DashboardsConfig | None:
        """The pipeline's dashboard generator; None when the pipeline does not list one."""
        used = self.service.pipelines.traces.processors
        return self._first(self.processors, DashboardsConfig, used)

    @property
    def clickhouse(self) -> ClickHouseExporter | None:
        used = self.service.pipelines.traces.exporters
        return self._first(self.exporters, ClickHouseExporter, used)

    @property
    def prometheus(self) -> PrometheusExporter | None:
        used = self.service.pipelines.traces.exporters
        return self._first(self.exporters, PrometheusExporter, used)

    @property
    def dlq(self) -> KafkaExporter:
        """Dead-letter topic: a kafka exporter (e.g. `kafka/dlq`), listed in the pipeline or
        only defined; else `otel-insights-dlq` on the kafka receiver's brokers."""
        used = self.service.pipelines.traces.exporters
        found = self._first(self.exporters, KafkaExporter, used) or self._first(
            self.exporters, KafkaExporter
        )
        if found is not None:
            return found
        return KafkaExporter(brokers=self._kafka_source.brokers)
