{{/* Names, labels and the derived settings every template shares. */}}

{{- define "mas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "mas.fullname" -}}
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

{{- define "mas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object. */}}
{{- define "mas.labels" -}}
helm.sh/chart: {{ include "mas.chart" . }}
app.kubernetes.io/name: {{ include "mas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mas
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "operator"). */}}
{{- define "mas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mas.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mas.operatorName" -}}
{{- printf "%s-operator" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mas.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image; also the default sidecar and embedded Redis image. */}}
{{- define "mas.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "mas.redisName" -}}
{{- printf "%s-redis" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The claim the operator archives audit entries on: the given one, or "<fullname>-audit-archive". */}}
{{- define "mas.auditArchiveClaim" -}}
{{- .Values.operator.audit.archive.existingClaim | default (printf "%s-audit-archive" (include "mas.fullname" .)) }}
{{- end }}

{{/* "true" when the chart runs its own Redis (no redis.external.url). */}}
{{- define "mas.redisEmbedded" -}}
{{- if not .Values.redis.external.url }}true{{ end }}
{{- end }}

{{/* Secret holding the administrator password, or "" when there is none (external, no secret). */}}
{{- define "mas.redisSecretName" -}}
{{- if include "mas.redisEmbedded" . }}
{{- default (include "mas.redisName" .) .Values.redis.embedded.existingSecret }}
{{- else }}
{{- .Values.redis.external.existingSecret }}
{{- end }}
{{- end }}

{{- define "mas.redisSecretKey" -}}
{{- if include "mas.redisEmbedded" . }}
{{- .Values.redis.embedded.passwordKey }}
{{- else }}
{{- .Values.redis.external.passwordKey }}
{{- end }}
{{- end }}

{{/* The Redis URL of the operator (MAS_REDIS_URL), never with a password. */}}
{{- define "mas.redisUrl" -}}
{{- if not (include "mas.redisEmbedded" .) }}
{{- $url := .Values.redis.external.url }}
{{- if regexMatch "^[a-z+]+://[^/@]*:[^/@]*@" $url }}
{{- fail "redis.external.url must not contain a password: put it in the Secret named by redis.external.existingSecret" }}
{{- end }}
{{- $url }}
{{- else if include "mas.sentinelEnabled" . }}
{{- include "mas.sentinelUrl" . }}
{{- else if .Values.hostNetwork }}
{{- printf "redis://127.0.0.1:%d" (int .Values.redis.port) }}
{{- else }}
{{- printf "redis://%s.%s.svc:%d" (include "mas.redisName" .) .Release.Namespace (int .Values.redis.port) }}
{{- end }}
{{- end }}

{{/* The Redis URL the sidecars use (MAS_AGENT_REDIS_URL): redis.agentUrl, or the URL without its user. */}}
{{- define "mas.agentRedisUrl" -}}
{{- if .Values.redis.agentUrl }}
{{- if regexMatch "^[a-z+]+://[^/]*@" .Values.redis.agentUrl }}
{{- fail "redis.agentUrl must not contain credentials: each agent gets its own ACL user" }}
{{- end }}
{{- .Values.redis.agentUrl }}
{{- else }}
{{- regexReplaceAll "^([a-z+]+://)[^/@]*@" (include "mas.redisUrl" .) "${1}" }}
{{- end }}
{{- end }}

{{/* Non-empty entries of a resources value (requests / limits of cpu and memory). */}}
{{- define "mas.resources" -}}
{{- range $kind := list "requests" "limits" }}
{{- $entries := dict }}
{{- range $name, $value := (index $.resources $kind | default dict) }}
{{- if $value }}
{{- $_ := set $entries $name $value }}
{{- end }}
{{- end }}
{{- if $entries }}
{{ $kind }}:
{{- toYaml $entries | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod security context shared by the operator and the embedded Redis: uid/gid 65532. */}}
{{- define "mas.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mas.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* hostNetwork, dnsPolicy and hostAliases of a pod spec. */}}
{{- define "mas.podNetwork" -}}
{{- if .Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .Values.hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The bootstrap hook's ServiceAccount, Role, RoleBinding and Job. */}}
{{- define "mas.bootstrapName" -}}
{{- printf "%s-bootstrap" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret the bootstrap creates for the embedded Redis's password, or "" (none to create). */}}
{{- define "mas.generatedRedisSecret" -}}
{{- if and (include "mas.redisEmbedded" .) (not .Values.redis.embedded.existingSecret) }}
{{- include "mas.redisName" . }}
{{- end }}
{{- end }}

{{/*
Annotations of the bootstrap hook's objects (call with the hook weight): created before the
release's own objects at install and upgrade, replaced on the next run, deleted once it succeeded.
*/}}
{{- define "mas.bootstrapHook" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/* The dashboard's Deployment and Service: "<fullname>-dashboard". */}}
{{- define "mas.dashboardName" -}}
{{- printf "%s-dashboard" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
