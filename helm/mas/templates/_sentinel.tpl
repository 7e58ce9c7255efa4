{{/* Helpers of redis.sentinel: a primary with replicas under Redis Sentinel (redis-sentinel.yaml). */}}

{{/* "true" when the chart runs its own primary, replicas and sentinels. */}}
{{- define "mas.sentinelEnabled" -}}
{{- if and (include "mas.redisEmbedded" .) .Values.redis.sentinel.enabled }}
{{- if .Values.hostNetwork }}
{{- fail "redis.sentinel.enabled needs a pod network: its pods cannot share one node's ports (hostNetwork)" }}
{{- end }}
{{- if gt (int .Values.redis.sentinel.quorum) (int .Values.redis.sentinel.sentinels) }}
{{- fail "redis.sentinel.quorum must not exceed redis.sentinel.sentinels" }}
{{- end }}true
{{- end }}
{{- end }}

{{/* The data pods' StatefulSet and headless Service. */}}
{{- define "mas.redisNodeName" -}}
{{- printf "%s-redis-node" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The sentinels' StatefulSet and headless Service. */}}
{{- define "mas.sentinelName" -}}
{{- printf "%s-redis-sentinel" (include "mas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The stable DNS name of data pod 0, the primary until the sentinels name another. */}}
{{- define "mas.initialPrimary" -}}
{{- printf "%s-0.%s.%s.svc" (include "mas.redisNodeName" .) (include "mas.redisNodeName" .) .Release.Namespace }}
{{- end }}

{{/* Every sentinel as host:port, comma-separated (each pod by its stable name). */}}
{{- define "mas.sentinelAddresses" -}}
{{- $name := include "mas.sentinelName" . }}
{{- $addresses := list }}
{{- range $index := until (int .Values.redis.sentinel.sentinels) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc:%d" $name $index $name $.Release.Namespace (int $.Values.redis.sentinel.port)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/* The Sentinel URL of the primary (without credentials), see mas.sentinel. */}}
{{- define "mas.sentinelUrl" -}}
{{- printf "redis+sentinel://%s/%s" (include "mas.sentinelAddresses" .) .Values.redis.sentinel.primaryName }}
{{- end }}

{{/* MAS_REDIS_WAIT_REPLICAS: redis.waitReplicas, else 1 under Sentinel, else 0. */}}
{{- define "mas.waitReplicas" -}}
{{- if kindIs "invalid" .Values.redis.waitReplicas }}
{{- ternary 1 0 (eq (include "mas.sentinelEnabled" .) "true") }}
{{- else }}
{{- .Values.redis.waitReplicas }}
{{- end }}
{{- end }}
