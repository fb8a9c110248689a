{{/* The collector-style config every role reads, rendered from the values, then config.override
merged into it. Secrets are never in it: passwords and tokens are ${env:...} references to
variables the pods take from Secrets. */}}

{{- define "otel-insights.configBase" -}}
{{- $k := .Values.kafka -}}
receivers:
  kafka:
    brokers: {{ toJson $k.brokers }}
    group_id: {{ $k.groupId | quote }}
    client_id: "${env:HOSTNAME:-otel-insights}"
    initial_offset: {{ $k.initialOffset }}
    traces:
      {{- if eq (len $k.topics) 1 }}
      topic: {{ first $k.topics | quote }}
      {{- else }}
      topics: {{ toJson $k.topics }}
      {{- end }}
      encoding: {{ $k.encoding }}
    partitions: {{ int $k.partitions }}
    rekey_topic: {{ $k.internalTopics.rekey | quote }}
    partials_topic: {{ $k.internalTopics.partials | quote }}
    {{- if $k.tls.enabled }}
    tls:
      ca_file: {{ printf "/etc/otel-insights/kafka-tls/%s" $k.tls.caKey | quote }}
      {{- if $k.tls.certKey }}
      cert_file: {{ printf "/etc/otel-insights/kafka-tls/%s" $k.tls.certKey | quote }}
      key_file: {{ printf "/etc/otel-insights/kafka-tls/%s" $k.tls.keyKey | quote }}
      {{- end }}
      insecure_skip_verify: {{ $k.tls.insecureSkipVerify }}
    {{- end }}
    {{- if $k.sasl.enabled }}
    auth:
      sasl:
        mechanism: {{ $k.sasl.mechanism }}
        username: {{ $k.sasl.username | quote }}
        password: "${env:KAFKA_SASL_PASSWORD:-}"
    {{- end }}
  otlp:
    protocols:
      grpc:
        endpoint: "0.0.0.0:4317"
      http:
        endpoint: "0.0.0.0:4318"
processors:
  servicegraph: {}
  windows:
    size: {{ .Values.windows.size }}
    allowed_lateness: {{ .Values.windows.allowedLateness }}
  {{- if .Values.anomaly.enabled }}
  anomaly:
    topic: {{ $k.internalTopics.anomalies | quote }}
  {{- end }}
  {{- if .Values.narrator.enabled }}
  narrator:
    topic: {{ $k.internalTopics.insights | quote }}
    daily_budget_usd: {{ .Values.narrator.dailyBudgetUsd }}
    models:
      {{- range .Values.narrator.models }}
      - name: {{ .name | quote }}
        model: {{ .model | quote }}
        {{- if .apiKeyEnv }}
        api_key: {{ printf "${env:%s:-}" .apiKeyEnv | quote }}
        {{- end }}
        {{- if .apiBase }}
        api_base: {{ .apiBase | quote }}
        {{- end }}
      {{- end }}
    routes:
      {{- toYaml .Values.narrator.routes | nindent 6 }}
  {{- end }}
  dashboards:
    topic: {{ $k.internalTopics.dashboards | quote }}
exporters:
  clickhouse:
    endpoint: {{ .Values.clickhouse.endpoint | quote }}
    database: {{ .Values.clickhouse.database | quote }}
    username: {{ .Values.clickhouse.username | quote }}
    password: "${env:CLICKHOUSE_PASSWORD:-}"
    ttl: {{ .Values.clickhouse.ttl }}
    create_schema: false
    cluster_name: {{ .Values.clickhouse.clusterName | quote }}
    async_insert: {{ .Values.clickhouse.asyncInsert }}
  prometheus:
    endpoint: "0.0.0.0:9464"
    api:
      enabled: true
      auth:
        bearer_token_env: OTEL_INSIGHTS_API_TOKEN
  kafka/dlq:
    topic: {{ $k.internalTopics.dlq | quote }}
extensions:
  ui:
    endpoint: "0.0.0.0:8080"
    auth:
      bearer_token_env: OTEL_INSIGHTS_API_TOKEN
service:
  extensions: []
  pipelines:
    traces:
      receivers: [kafka]
      processors: [servicegraph, windows{{ if .Values.anomaly.enabled }}, anomaly{{ end }}{{ if .Values.narrator.enabled }}, narrator{{ end }}, dashboards]
      exporters: [clickhouse, prometheus]
  telemetry:
    logs:
      level: {{ .Values.logLevel }}
{{- end }}

{{- define "otel-insights.configYaml" -}}
{{- $base := include "otel-insights.configBase" . | fromYaml -}}
{{- toYaml (mustMergeOverwrite $base (deepCopy .Values.config.override)) }}
{{- end }}
