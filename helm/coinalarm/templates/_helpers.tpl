{{/*
Names, labels, the checked settings, the application's TOML config and the container environment.
*/}}

{{- define "coinalarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coinalarm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coinalarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coinalarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coinalarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coinalarm.labels" -}}
helm.sh/chart: {{ include "coinalarm.chart" . }}
{{ include "coinalarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coinalarm
coinalarm.io/site: {{ .Values.site | quote }}
{{- end }}

{{- define "coinalarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coinalarm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coinalarm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The services of the pipeline, in pipeline order (services/coinalarm/src/serve.rs). */}}
{{- define "coinalarm.allServices" -}}
["ingest", "matcher", "notifier", "dispatcher", "projector", "api"]
{{- end }}

{{/*
The Deployments to render, as JSON: [{"name": ..., "services": [...]}]. Mode all: one, `all`, hosting
every service; mode split: one per enabled service.
*/}}
{{- define "coinalarm.units" -}}
{{- $units := list }}
{{- if eq .Values.mode "all" }}
{{- $units = append $units (dict "name" "all" "services" (include "coinalarm.allServices" . | fromJsonArray)) }}
{{- else if eq .Values.mode "split" }}
{{- range $service := include "coinalarm.allServices" . | fromJsonArray }}
{{- if (index $.Values.serve $service).enabled }}
{{- $units = append $units (dict "name" $service "services" (list $service)) }}
{{- end }}
{{- end }}
{{- else }}
{{- fail (printf "mode must be `all` or `split`, not %q" .Values.mode) }}
{{- end }}
{{- toJson $units }}
{{- end }}

{{/* Whether any Deployment hosts the API (then the Service, Ingress and API settings apply). */}}
{{- define "coinalarm.hasApi" -}}
{{- if or (eq .Values.mode "all") .Values.serve.api.enabled }}true{{ end }}
{{- end }}

{{/* Environment-variable spelling of a config key id (figment lower-cases what it reads). */}}
{{- define "coinalarm.envKey" -}}
{{- upper . }}
{{- end }}

{{/* A Secret key name from a pattern such as `session-key-<id>`. */}}
{{- define "coinalarm.secretKey" -}}
{{- regexReplaceAll "<[a-z]+>" .pattern (.name | replace "_" "-") }}
{{- end }}

{{/*
Every check of the values that the application would otherwise only report at start, or never:
required settings, names that become environment variable names, secrets put into the ConfigMap.
*/}}
{{- define "coinalarm.validate" -}}
{{- if not (has .Values.site (list "onprem" "cloud")) }}
{{- fail (printf "site must be `onprem` or `cloud` (install the chart once per site), not %q" (toString .Values.site)) }}
{{- end }}
{{- if not (index .Values.nats.urls .Values.site) }}
{{- fail (printf "nats.urls.%s is required: the client URL of this site's NATS server" .Values.site) }}
{{- end }}
{{- if not .Values.secrets.existingSecret }}
{{- fail "secrets.existingSecret is required: the Secret holding the NATS passwords and keys (see the chart README)" }}
{{- end }}
{{- if and (not .Values.postgres.url) (not .Values.postgres.urlSecretKey) }}
{{- fail "postgres.url or postgres.urlSecretKey is required: this site's Postgres" }}
{{- end }}
{{- if and (not .Values.redis.url) (not .Values.redis.urlSecretKey) }}
{{- fail "redis.url or redis.urlSecretKey is required: this site's Redis" }}
{{- end }}
{{- range $ring := list "sessionKeys" "sealingKeys" }}
{{- $keys := index $.Values $ring }}
{{- range $id := $keys.ids }}
{{- if not (regexMatch "^[a-z0-9_]{1,64}$" $id) }}
{{- fail (printf "%s.ids: %q must match [a-z0-9_]{1,64} (it is part of an environment variable name)" $ring $id) }}
{{- end }}
{{- end }}
{{- if not (has $keys.current $keys.ids) }}
{{- fail (printf "%s.current %q is not among %s.ids" $ring $keys.current $ring) }}
{{- end }}
{{- end }}
{{- $dispatcher := .Values.config.dispatcher | default dict }}
{{- range $provider, $settings := $dispatcher.providers | default dict }}
{{- if not (regexMatch "^[a-z0-9_]{1,64}$" $provider) }}
{{- fail (printf "config.dispatcher.providers: provider name %q must match [a-z0-9_]{1,64} (it is part of an environment variable name)" $provider) }}
{{- end }}
{{- end }}
{{- if include "coinalarm.hasApi" . }}
{{- if not (dig "api" "public_base_url" "" .Values.config) }}
{{- fail "config.api.public_base_url is required: the URL under which clients and the SMS provider reach this site's API" }}
{{- end }}
{{- end }}
{{- include "coinalarm.rejectSecrets" (dict "table" .Values.config "path" "config") }}
{{- end }}

{{/* Fails on a secret-looking key anywhere under `config`: those belong in the Secret. */}}
{{- define "coinalarm.rejectSecrets" -}}
{{- $secretKeys := list "password" "auth_token" "api_key_secret" "phone_hash_key" "keys" "twilio_auth_tokens" "users" }}
{{- range $key, $value := .table }}
{{- if and (has $key $secretKeys) (not (empty $value)) }}
{{- fail (printf "%s.%s looks like a secret: put it in the Secret (secrets.existingSecret), not in config, which becomes a ConfigMap" $.path $key) }}
{{- end }}
{{- if kindIs "map" $value }}
{{- include "coinalarm.rejectSecrets" (dict "table" $value "path" (printf "%s.%s" $.path $key)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The application's config as a dict: the user's `config`, then what the chart decides (sites, URLs,
listeners, key ring `current`s), which must agree with the pod spec and the environment.
*/}}
{{- define "coinalarm.configDict" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $forced := dict
  "site" .Values.site
  "nats" (dict "urls" (dict "onprem" (.Values.nats.urls.onprem | default "") "cloud" (.Values.nats.urls.cloud | default "")) "user" "admin")
  "telemetry" (dict "metrics_listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics)))
  "api" (dict
    "listen" (printf "0.0.0.0:%d" (int .Values.ports.api))
    "session_keys" (dict "current" .Values.sessionKeys.current)
    "sealing_keys" (dict "current" .Values.sealingKeys.current))
  "notifier" (dict "sealing_keys" (dict "current" .Values.sealingKeys.current))
  "dispatcher" (dict "sealing_keys" (dict "current" .Values.sealingKeys.current))
}}
{{- if not .Values.postgres.urlSecretKey }}
{{- $_ := set $forced "postgres" (dict "url" .Values.postgres.url) }}
{{- end }}
{{- if not .Values.redis.urlSecretKey }}
{{- $_ := set $forced "redis" (dict "url" .Values.redis.url) }}
{{- end }}
{{- $config = mergeOverwrite $config $forced }}
{{- /* Delivery statuses come back to this site's API unless a provider says otherwise. */}}
{{- $publicBase := dig "api" "public_base_url" "" $config | trimSuffix "/" }}
{{- range $provider, $settings := dig "dispatcher" "providers" dict $config }}
{{- if and (kindIs "map" $settings) $publicBase (not (index $settings "status_callback_url")) }}
{{- $_ := set $settings "status_callback_url" (printf "%s/v1/twilio/status" $publicBase) }}
{{- end }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/*
TOML from a dict, written by hand: Helm's toToml prints every number as a float (`16.0`), which the
application's integer settings reject. Whole numbers are printed as integers (the application reads an
integer wherever it expects a float), empty strings and nulls are left out (unset: the default applies),
tables follow the plain keys of their parent.
*/}}
{{- define "coinalarm.toml" -}}
{{- include "coinalarm.tomlTable" (dict "table" . "path" "") }}
{{- end }}

{{- define "coinalarm.tomlTable" -}}
{{- $scalars := list }}
{{- range $key, $value := .table }}
{{- if and (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) (not (and (kindIs "string" $value) (eq $value ""))) }}
{{- $scalars = append $scalars (printf "%s = %s" (include "coinalarm.tomlKey" $key) (include "coinalarm.tomlValue" $value)) }}
{{- end }}
{{- end }}
{{- /* A table with no key of its own needs no header: its sub-tables name it. */}}
{{- if and .path $scalars }}

[{{ .path }}]
{{- end }}
{{- range $scalars }}
{{ . }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{- include "coinalarm.tomlTable" (dict "table" $value "path" (printf "%s%s%s" $.path (ternary "." "" (ne $.path "")) (include "coinalarm.tomlKey" $key))) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coinalarm.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "coinalarm.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}
{{- if eq (float64 .) (floor .) }}{{ printf "%d" (int64 .) }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $index, $item := . }}{{ if $index }}, {{ end }}{{ if kindIs "map" $item }}{{ fail "config: arrays of tables are not supported" }}{{ end }}{{ include "coinalarm.tomlValue" $item }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %v (%s) as TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* The rendered coinalarm.toml. */}}
{{- define "coinalarm.configToml" -}}
# coinalarm.toml of the {{ .Values.site }} site, rendered by the {{ .Chart.Name }} chart from values.config.
# No secret: passwords and keys reach the process as COINALARM_* variables from the Secret.
{{- include "coinalarm.toml" (include "coinalarm.configDict" . | fromJson) }}
{{ end }}

{{/* An env entry whose value comes from the release's Secret. */}}
{{- define "coinalarm.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/*
The environment of a coinalarm container hosting `services` (dict: root, services): the config file,
then only the secrets those services read.
*/}}
{{- define "coinalarm.env" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $secret := $values.secrets.existingSecret }}
{{- $keys := $values.secrets.keys }}
{{- $services := .services }}
- name: COINALARM_CONFIG
  value: /etc/coinalarm/coinalarm.toml
{{ include "coinalarm.secretEnv" (dict "name" "COINALARM_NATS__PASSWORD" "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.natsPassword "name" "admin"))) }}
{{- if $values.postgres.urlSecretKey }}
{{ include "coinalarm.secretEnv" (dict "name" "COINALARM_POSTGRES__URL" "secret" $secret "key" $values.postgres.urlSecretKey) }}
{{- end }}
{{- if $values.redis.urlSecretKey }}
{{ include "coinalarm.secretEnv" (dict "name" "COINALARM_REDIS__URL" "secret" $secret "key" $values.redis.urlSecretKey) }}
{{- end }}
{{- if $values.nats.perServiceUsers }}
{{- /* Every `coinalarm serve` also runs the replication monitor, as the read-only `monitor` user. */}}
{{- range $service := (ternary (append $services "monitor") $services (gt (len $services) 0)) }}
- name: COINALARM_NATS__USERS__{{ upper $service }}__USER
  value: {{ $service | quote }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_NATS__USERS__%s__PASSWORD" (upper $service)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.natsPassword "name" $service))) }}
{{- end }}
{{- end }}
{{- $providers := dig "dispatcher" "providers" dict $values.config }}
{{- if has "api" $services }}
{{ include "coinalarm.secretEnv" (dict "name" "COINALARM_API__PHONE_HASH_KEY" "secret" $secret "key" $keys.phoneHashKey) }}
{{- range $id := $values.sessionKeys.ids }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_API__SESSION_KEYS__KEYS__%s" (upper $id)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.sessionKey "name" $id))) }}
{{- end }}
{{- range $provider, $settings := $providers }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_API__TWILIO_AUTH_TOKENS__%s" (upper $provider)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.providerAuthToken "name" $provider))) }}
{{- end }}
{{- end }}
{{- range $service := list "api" "notifier" "dispatcher" }}
{{- if has $service $services }}
{{- range $id := $values.sealingKeys.ids }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_%s__SEALING_KEYS__KEYS__%s" (upper $service) (upper $id)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.sealingKey "name" $id))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if has "dispatcher" $services }}
{{- range $provider, $settings := $providers }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_DISPATCHER__PROVIDERS__%s__AUTH_TOKEN" (upper $provider)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.providerAuthToken "name" $provider))) }}
{{- if and (kindIs "map" $settings) (index $settings "api_key_sid") }}
{{ include "coinalarm.secretEnv" (dict "name" (printf "COINALARM_DISPATCHER__PROVIDERS__%s__API_KEY_SECRET" (upper $provider)) "secret" $secret "key" (include "coinalarm.secretKey" (dict "pattern" $keys.providerApiKeySecret "name" $provider))) }}
{{- end }}
{{- end }}
{{- end }}
{{- with $values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level scheduling and security settings shared by the Deployments and the Job. */}}
{{- define "coinalarm.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
