{{/* app.kubernetes.io/name of the operator's pods. Fixed: every platform's NetworkPolicy lets
pods with this name (in spec.networkPolicy.operatorNamespace, default caduceus-system) read the
API's compliance self-report on port 9090. */}}
{{- define "caduceus-operator.name" -}}
{{- .Chart.Name }}
{{- end }}

{{/* Fully qualified release name. */}}
{{- define "caduceus-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := .Chart.Name }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selector labels: stable for the life of the release. */}}
{{- define "caduceus-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caduceus-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "caduceus-operator.labels" -}}
{{ include "caduceus-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: caduceus
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "caduceus-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "caduceus-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "caduceus-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
