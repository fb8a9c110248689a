{{/* Names, labels and the parts every workload shares. */}}

{{- define "otel-insights.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "otel-insights.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "otel-insights.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "otel-insights.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "otel-insights.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "otel-insights.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otel-insights
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "pipeline") */}}
{{- define "otel-insights.selector" -}}
app.kubernetes.io/name: {{ include "otel-insights.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "otel-insights.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otel-insights.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "otel-insights.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the chart keeps inline values in (api token, passwords). */}}
{{- define "otel-insights.secretName" -}}
{{- include "otel-insights.fullname" . }}
{{- end }}

{{- define "otel-insights.configMapName" -}}
{{- default (include "otel-insights.fullname" .) .Values.config.existingConfigMap }}
{{- end }}

{{/* Checks that hold whatever the schema allows. */}}
{{- define "otel-insights.validate" -}}
{{- if gt (int .Values.pipeline.replicas) (int .Values.kafka.partitions) }}
{{- fail (printf "pipeline.replicas (%d) is more than kafka.partitions (%d): each input partition is read by one worker, the extra ones would sit idle" (int .Values.pipeline.replicas) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if and .Values.narrator.enabled (not .Values.anomaly.enabled) }}
{{- fail "narrator.enabled narrates the incidents of the anomaly detectors: set anomaly.enabled too" }}
{{- end }}
{{- if and .Values.ui.enabled (not .Values.narrator.enabled) }}
{{- fail "ui.enabled shows the narrator's insights: set narrator.enabled (and anomaly.enabled) too" }}
{{- end }}
{{- if and .Values.kafka.tls.enabled (not .Values.kafka.tls.existingSecret) }}
{{- fail "kafka.tls.enabled: name the Secret with the CA (and client certificate) in kafka.tls.existingSecret" }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (a client certificate and its key)" }}
{{- end }}
{{- if and .Values.kafka.sasl.enabled (not .Values.kafka.sasl.existingSecret) (not .Values.kafka.sasl.password) }}
{{- fail "kafka.sasl.enabled: give the password's Secret in kafka.sasl.existingSecret (or kafka.sasl.password)" }}
{{- end }}
{{- if and .Values.kafka.sasl.enabled (not .Values.kafka.sasl.username) }}
{{- fail "kafka.sasl.enabled: set kafka.sasl.username" }}
{{- end }}
{{- end }}

{{/* Environment every role gets: the passwords and tokens the config names, from Secrets. */}}
{{- define "otel-insights.env" -}}
{{- $secret := include "otel-insights.secretName" . -}}
{{- if or .Values.clickhouse.existingSecret .Values.clickhouse.password }}
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default $secret .Values.clickhouse.existingSecret }}
      key: {{ ternary .Values.clickhouse.passwordKey "clickhouse-password" (not (empty .Values.clickhouse.existingSecret)) }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default $secret .Values.kafka.sasl.existingSecret }}
      key: {{ ternary .Values.kafka.sasl.passwordKey "kafka-sasl-password" (not (empty .Values.kafka.sasl.existingSecret)) }}
{{- end }}
- name: OTEL_INSIGHTS_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ default $secret .Values.apiToken.existingSecret }}
      key: {{ ternary .Values.apiToken.key "api-token" (not (empty .Values.apiToken.existingSecret)) }}
{{- if .Values.llm.existingSecret }}
{{- range $env, $key := .Values.llm.secretKeys }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.llm.existingSecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/* One container of the image: (dict "ctx" $ "role" "pipeline" "args" (list ...) "ports" (list ...) "probePort" "metrics" "resources" ... "extraEnv" ... "probes" true) */}}
{{- define "otel-insights.container" -}}
{{- $ctx := .ctx -}}
- name: {{ .role }}
  image: {{ include "otel-insights.image" $ctx }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  {{- with .ports }}
  ports:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "otel-insights.env" $ctx | nindent 4 }}
    {{- with .extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if .probePort }}
  startupProbe:
    httpGet: {path: /healthz, port: {{ .probePort }}}
    periodSeconds: 5
    failureThreshold: 60
  livenessProbe:
    httpGet: {path: /healthz, port: {{ .probePort }}}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 6
  readinessProbe:
    httpGet: {path: /readyz, port: {{ .probePort }}}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  {{- end }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml $ctx.Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/otel-insights/config, readOnly: true}
    - {name: tmp, mountPath: /tmp}
    {{- if $ctx.Values.kafka.tls.enabled }}
    - {name: kafka-tls, mountPath: /etc/otel-insights/kafka-tls, readOnly: true}
    {{- end }}
{{- end }}

{{/* The volumes of every pod: (dict "ctx" $ "configMap" name) */}}
{{- define "otel-insights.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if .ctx.Values.kafka.tls.enabled }}
- name: kafka-tls
  secret:
    secretName: {{ .ctx.Values.kafka.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* Pod-level settings: (dict "ctx" $ "part" .Values.pipeline) */}}
{{- define "otel-insights.podSettings" -}}
{{- $ctx := .ctx -}}
serviceAccountName: {{ include "otel-insights.serviceAccountName" $ctx }}
automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
{{- with $ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Annotations that roll the pods when the config changes. */}}
{{- define "otel-insights.checksum" -}}
{{- if .Values.config.existingConfigMap }}
checksum/config: {{ .Values.config.existingConfigMap | sha256sum }}
{{- else }}
checksum/config: {{ include "otel-insights.configYaml" . | sha256sum }}
{{- end }}
{{- end }}
