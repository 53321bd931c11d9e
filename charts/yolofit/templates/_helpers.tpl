{{/* Names and labels shared by the templates. */}}

{{- define "yolofit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "yolofit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "yolofit.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "yolofit.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "yolofit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "yolofit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: yolofit
{{- end }}

{{- define "yolofit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yolofit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "yolofit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yolofit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "yolofit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Webhook Service, its DNS name (the certificate's SAN), and the TLS Secret. */}}
{{- define "yolofit.webhookService" -}}
{{- printf "%s-webhook" (include "yolofit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "yolofit.webhookDNS" -}}
{{- printf "%s.%s.svc" (include "yolofit.webhookService" .) .Release.Namespace }}
{{- end }}

{{- define "yolofit.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "yolofit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "yolofit.peeringName" -}}
{{- default (include "yolofit.fullname" .) .Values.operator.peering }}
{{- end }}

{{/* True when the Prometheus Operator's CRDs are served (or passed with --api-versions). */}}
{{- define "yolofit.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}
