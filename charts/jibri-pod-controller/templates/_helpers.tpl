{{/*
Names and labels.
*/}}
{{- define "jibri-pod-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jibri-pod-controller.fullname" -}}
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

{{- define "jibri-pod-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jibri-pod-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jibri-pod-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jibri-pod-controller.labels" -}}
helm.sh/chart: {{ include "jibri-pod-controller.chart" . }}
{{ include "jibri-pod-controller.selectorLabels" . }}
app.kubernetes.io/component: controller
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "jibri-pod-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jibri-pod-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A config value as an environment variable's string. Helm reads numbers from values files as
floats, so 1048576 would print as 1.048576e+06: whole numbers are printed as integers.
*/}}
{{- define "jibri-pod-controller.envString" -}}
{{- if kindIs "invalid" . }}
{{- else if kindIs "float64" . }}
{{- if eq . (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
One config value by name, as a string ("" when unset).
*/}}
{{- define "jibri-pod-controller.setting" -}}
{{- include "jibri-pod-controller.envString" (index .root.Values.config .name) }}
{{- end }}

{{/*
The controller's environment as a YAML map of name -> string: every non-empty entry of
.Values.config, plus the values the chart derives (webhook authentication). NAMESPACE and
POD_NAME, when not set here, come from the downward API (see the Deployment).
*/}}
{{- define "jibri-pod-controller.environment" -}}
{{- $env := dict }}
{{- range $name, $value := .Values.config }}
{{- $s := include "jibri-pod-controller.envString" $value }}
{{- if ne $s "" }}
{{- $_ := set $env $name $s }}
{{- end }}
{{- end }}
{{- if .Values.jwt.enabled }}
{{- if and (not .Values.jwt.existingSecret) (not .Values.jwt.existingConfigMap) (not (hasKey $env "JWT_KEYS_DIR")) (not (hasKey $env "JWT_JWKS_FILE")) }}
{{- fail "jwt.enabled needs jwt.existingSecret or jwt.existingConfigMap (the webhook public keys); set jwt.enabled=false to accept unauthenticated webhooks" }}
{{- end }}
{{- if not (hasKey $env "JWT_ISSUER") }}
{{- fail "jwt.enabled needs config.JWT_ISSUER (jwt-info's issuer in jibri.conf)" }}
{{- end }}
{{- if .Values.jwt.jwksKey }}
{{- if not (hasKey $env "JWT_JWKS_FILE") }}
{{- $_ := set $env "JWT_JWKS_FILE" (printf "%s/%s" (trimSuffix "/" .Values.jwt.mountPath) .Values.jwt.jwksKey) }}
{{- end }}
{{- else if not (hasKey $env "JWT_KEYS_DIR") }}
{{- $_ := set $env "JWT_KEYS_DIR" .Values.jwt.mountPath }}
{{- end }}
{{- else if not (hasKey $env "WEBHOOK_AUTH") }}
{{- $_ := set $env "WEBHOOK_AUTH" "none" }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
JIBRI_BUSY_LABELS ("k=v,k2=v2") as a matchLabels map.
*/}}
{{- define "jibri-pod-controller.busyLabels" -}}
{{- $labels := dict }}
{{- range $pair := splitList "," (include "jibri-pod-controller.setting" (dict "root" . "name" "JIBRI_BUSY_LABELS")) }}
{{- $pair = trim $pair }}
{{- if $pair }}
{{- $kv := splitList "=" $pair }}
{{- if ne (len $kv) 2 }}
{{- fail (printf "config.JIBRI_BUSY_LABELS: %q is not key=value" $pair) }}
{{- end }}
{{- $_ := set $labels (trim (index $kv 0)) (trim (index $kv 1)) }}
{{- end }}
{{- end }}
{{- if not $labels }}
{{- fail "config.JIBRI_BUSY_LABELS must not be empty when busyJibriPodDisruptionBudget.enabled" }}
{{- end }}
{{- toYaml $labels }}
{{- end }}
