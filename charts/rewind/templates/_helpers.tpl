{{/* The release's full name: the release name, with "rewind" unless it already has it. */}}
{{- define "rewind.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rewind.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the operator's pods: name and instance. */}}
{{- define "rewind.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rewind.labels" -}}
{{ include "rewind.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rewind
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "rewind.chart" . }}
{{- end -}}

{{- define "rewind.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rewind.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rewind.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs in a namespace it watches (exactly what the code calls). */}}
{{- define "rewind.rules" -}}
- apiGroups: [rewind.dev]
  resources: [releases, rollbackpolicies]
  verbs: [get, list, watch]
- apiGroups: [rewind.dev]
  resources: [releases/status, rollbackpolicies/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
# ReplicaSets tie a revision's pods to its Deployment; pods show health.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Migration Jobs: the operator creates them and watches those labelled rewind.dev/release.
# No patch or delete (a Job is never changed; a retry is a new Job) and no pods/log (the
# failure message is the pod status's termination message: FallbackToLogsOnError).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
{{- if .Values.registry.readPullSecrets }}
# Pull secrets, to look tags up the way the kubelet would pull them (registry.readPullSecrets).
- apiGroups: [""]
  resources: [secrets, serviceaccounts]
  verbs: [get]
{{- end }}
{{- end -}}

{{- define "rewind.leaseName" -}}
{{- default (printf "%s-leader" (include "rewind.fullname" .)) .Values.leaderElection.leaseName | trunc 63 | trimSuffix "-" -}}
{{- end -}}
