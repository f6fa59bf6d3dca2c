{{/* Helpers in the style of `helm create`. */}}

{{/* Chart name, overridable by nameOverride. */}}
{{- define "cryokube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full object-name prefix, truncated to 63 characters (the DNS label limit). */}}
{{- define "cryokube.fullname" -}}
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

{{/* Name of one component's objects: "<fullname>-<component>", within 63 characters. */}}
{{- define "cryokube.componentName" -}}
{{- printf "%s-%s" (include "cryokube.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "cryokube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "operator"). */}}
{{- define "cryokube.labels" -}}
helm.sh/chart: {{ include "cryokube.chart" .root }}
{{ include "cryokube.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cryokube
{{- end }}

{{/* Selector labels of one component. */}}
{{- define "cryokube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryokube.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "cryokube.serviceAccountName" -}}
{{- include "cryokube.componentName" (dict "root" . "component" "operator") }}
{{- end }}

{{/* "repository:tag" with the tag defaulting to the chart's appVersion. */}}
{{- define "cryokube.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Name of the Secret with the metadata service's keys. */}}
{{- define "cryokube.metadataSecretName" -}}
{{- default (include "cryokube.componentName" (dict "root" . "component" "metadata-keys")) .Values.metadataService.existingSecret }}
{{- end }}

{{/* In-cluster URLs of the metadata service's two ports. */}}
{{- define "cryokube.metadataHost" -}}
{{- printf "%s.%s.svc" (include "cryokube.componentName" (dict "root" . "component" "metadata")) .Release.Namespace }}
{{- end }}

{{/* The container security context every container shares. */}}
{{- define "cryokube.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* imagePullSecrets block of a pod spec. */}}
{{- define "cryokube.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* DNS name of the internal MongoDB's first (only) member. */}}
{{- define "cryokube.mongodbHost" -}}
{{- $name := include "cryokube.componentName" (dict "root" . "component" "mongodb") }}
{{- printf "%s-0.%s.%s.svc" $name $name .Release.Namespace }}
{{- end }}

{{/*
A Role (namespace given) or ClusterRole (no namespace) bound to the release's ServiceAccount of
the same name; call with (dict "root" $ "kind" "Role" "name" $name "namespace" $ns
"labels" $labels "rules" $rules), "rules" being a YAML list as text.
*/}}
{{- define "cryokube.roleAndBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ .kind }}
metadata:
  name: {{ .name }}
  {{- with .namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- .labels | nindent 4 }}
rules:
  {{- .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ .kind }}Binding
metadata:
  name: {{ .name }}
  {{- with .namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- .labels | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ .kind }}
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ .name }}
    namespace: {{ .root.Release.Namespace }}
{{- end }}
