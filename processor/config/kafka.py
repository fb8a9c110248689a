"""The kafka receiver's connection settings as today's kafkareceiver spells them: tls, auth.sasl,
header_extraction, and the aiokafka/faust options every Kafka client of a worker gets from them."""

from __future__ import annotations

import logging
import ssl
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from processor.config.base import Frozen, NonEmptyStr

log = logging.getLogger("otel_insights.config")

# Keys of the collector's kafkareceiver from its Sarama days that users paste with the rest.
# One means nothing to our client: accepted, and said so when the config is loaded. The
# others ask for something the pipeline decides itself (when offsets are committed, how
# much a fetch takes): accepted, they would not do what they say, so they are refused.
NOT_USED_KEYS = {
    "protocol_version": "the Kafka client asks each broker which protocol versions it speaks "
                        "(ApiVersions) and uses those",
}
_FETCH = ("the worker's consumer sizes its fetches itself, and a batch is bounded by "
          "max_batch_records and max_batch_wait")
REFUSED_KEYS = {
    "autocommit": "offsets are committed only once what their records produced is stored "
                  "(so a crash replays instead of losing), never on a timer",
    "message_marking": "a record is marked done only once what it produced is stored; an "
                       "undecodable one goes to the dead-letter topic and is then done",
    **{key: _FETCH for key in ("min_fetch_size", "default_fetch_size", "max_fetch_size",
                               "max_partition_fetch_size", "max_fetch_wait")},
}


def sarama_keys(data: object) -> object:
    """The receiver's settings without the keys of NOT_USED_KEYS (each logged as not used);
    a ValidationError naming each key of REFUSED_KEYS present, with why and what to do."""
    if not isinstance(data, dict):
        return data
    refused = [InitErrorDetails(type=PydanticCustomError("config", "{message}", {
        "message": f"not supported, remove it: {why}"}), loc=(key,), input=data[key])
        for key, why in REFUSED_KEYS.items() if key in data]
    if refused:
        raise ValidationError.from_exception_data("KafkaReceiver", refused)
    for key, why in NOT_USED_KEYS.items():
        if key in data:
            log.warning("receivers.kafka.%s is not used: %s", key, why)
    return {k: v for k, v in data.items() if k not in NOT_USED_KEYS}


_TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                 "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]


class KafkaTLS(Frozen):
    """`tls` (configtls.ClientConfig's keys). Present = TLS to the brokers, unless `insecure`
    is set and no CA is given (the collector's rule: then the connection is plain TCP)."""

    ca_file: str = ""
    ca_pem: str = Field(default="", repr=False)
    cert_file: str = ""
    key_file: str = ""
    include_system_ca_certs_pool: bool = False
    insecure: bool = False
    insecure_skip_verify: bool = False  # no certificate or host name check (tests only)
    server_name_override: str = ""  # the name checked against the broker's certificate
    min_version: TlsVersion = "1.2"
    max_version: TlsVersion | Literal[""] = ""

    @model_validator(mode="after")
    def _pairs(self) -> KafkaTLS:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        if self.max_version and _TLS_VERSIONS[self.max_version] < _TLS_VERSIONS[self.min_version]:
            raise ValueError("max_version must be >= min_version")
        return self

    @property
    def enabled(self) -> bool:
        return not (self.insecure and not (self.ca_file or self.ca_pem))

    def context(self) -> ssl.SSLContext:
        """The client SSL context; files are read now, so a bad path fails at start."""
        ctx = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.server_name = self.server_name_override or None
        ctx.minimum_version = _TLS_VERSIONS[self.min_version]
        if self.max_version:
            ctx.maximum_version = _TLS_VERSIONS[self.max_version]
        if self.ca_file or self.ca_pem:
            ctx.load_verify_locations(cafile=self.ca_file or None, cadata=self.ca_pem or None)
            if self.include_system_ca_certs_pool:
                ctx.load_default_certs()
        else:
            ctx.load_default_certs()
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class _ServerNameContext(ssl.SSLContext):
    """Checks (and sends as SNI) `server_name` instead of the broker's address when set:
    aiokafka has no option for it, and asyncio wraps every connection through wrap_bio."""

    server_name: str | None = None

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False,
                 server_hostname: Any = None, session: Any = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side,
                                self.server_name or server_hostname, session)


class KafkaSASL(Frozen):
    """`auth.sasl`: username and password over SASL (TLS too when `tls` is set)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: NonEmptyStr
    password: SecretStr
    # Sarama's handshake version; aiokafka negotiates it with the broker, so either is fine.
    version: Literal[0, 1] = 0


class KafkaAuth(Frozen):
    """`auth`. Kerberos and AWS MSK IAM are not supported (unknown keys, refused at load)."""

    sasl: KafkaSASL | None = None
    tls: KafkaTLS | None = None  # deprecated upstream since v0.124.0 for the top-level `tls`


class HeaderExtraction(Frozen):
    """`header_extraction`: copy these record headers onto every resource of the record as
    `kafka.header.<name>` attributes (what `dimensions` and `database_name_attributes` read)."""

    extract_headers: bool = False
    headers: tuple[NonEmptyStr, ...] = ()

    @property
    def active(self) -> tuple[str, ...]:
        return self.headers if self.extract_headers else ()


HEADER_ATTRIBUTE_PREFIX = "kafka.header."


def client_options(tls: KafkaTLS | None, auth: KafkaAuth) -> dict[str, Any]:
    """aiokafka's security keyword arguments for these settings (for every client: consumer,
    producers, admin). `tls` wins over the deprecated `auth.tls`, as upstream."""
    tls = tls or auth.tls
    ctx = tls.context() if tls is not None and tls.enabled else None
    sasl = auth.sasl
    if sasl is None:
        return {"security_protocol": "SSL" if ctx else "PLAINTEXT", "ssl_context": ctx}
    return {"security_protocol": "SASL_SSL" if ctx else "SASL_PLAINTEXT", "ssl_context": ctx,
            "sasl_mechanism": sasl.mechanism, "sasl_plain_username": sasl.username,
            "sasl_plain_password": sasl.password.get_secret_value()}
