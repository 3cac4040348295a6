{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "product-categorizer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name of every object. */}}
{{- define "product-categorizer.fullname" -}}
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

{{- define "product-categorizer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "product-categorizer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "product-categorizer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "product-categorizer.labels" -}}
helm.sh/chart: {{ include "product-categorizer.chart" . }}
{{ include "product-categorizer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "product-categorizer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "product-categorizer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "product-categorizer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* True ("true") when the protocol authenticates with SASL. */}}
{{- define "product-categorizer.usesSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/*
Cross-field checks JSON Schema cannot express; called from the Deployment so every render runs them.
*/}}
{{- define "product-categorizer.validate" -}}
{{- $partitions := int .Values.kafka.partitions }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) $partitions) }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d): a consumer beyond the partition count of topic %q gets no partition, never becomes ready and only causes rebalances. Lower maxReplicas or add partitions to the topic first." (int .Values.autoscaling.maxReplicas) $partitions .Values.kafka.topics.input) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (eq .Values.autoscaling.kind "hpa") (lt (int .Values.autoscaling.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas must be >= 1 with autoscaling.kind=hpa (only KEDA can scale to zero)" }}
{{- end }}
{{- if and (not .Values.autoscaling.enabled) (gt (int .Values.replicaCount) $partitions) }}
{{- fail (printf "replicaCount (%d) exceeds kafka.partitions (%d): the extra consumers would stay idle and unready" (int .Values.replicaCount) $partitions) }}
{{- end }}
{{- if and (include "product-categorizer.usesSasl" .) (not .Values.kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.existingSecret to the name of a Secret holding the SASL credentials (keys %q and %q); credentials are never taken as values" .Values.kafka.securityProtocol .Values.kafka.sasl.usernameKey .Values.kafka.sasl.passwordKey) }}
{{- end }}
{{- range $key, $_ := .Values.worker.extraSettings }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|USERNAME|_KEY$)" $key }}
{{- fail (printf "worker.extraSettings.%s looks like a credential: the ConfigMap is not secret; use extraEnv with valueFrom.secretKeyRef" $key) }}
{{- end }}
{{- end }}
{{- $store := .Values.bundle.store }}
{{- if and $store.enabled (not $store.s3Uri) }}
{{- fail "bundle.store.enabled needs bundle.store.s3Uri (s3://bucket/prefix holding the versions and serving.json)" }}
{{- end }}
{{- if and $store.enabled .Values.bundle.volume }}
{{- fail "bundle.store.enabled and bundle.volume are exclusive: with the store the worker serves the store's pointer, not bundle.path" }}
{{- end }}
{{- if and $store.enabled (or (eq (trimSuffix "/" $store.path) "/tmp") (hasPrefix "/tmp/" $store.path)) }}
{{- fail (printf "bundle.store.path (%s) must not be under /tmp, which is the worker's own emptyDir" $store.path) }}
{{- end }}
{{- if and .Values.worker.shadow.version (not $store.enabled) }}
{{- fail (printf "worker.shadow.version (%s) names a version of the bundle store: set bundle.store.enabled" .Values.worker.shadow.version) }}
{{- end }}
{{- $topics := .Values.kafka.topics }}
{{- if has .Values.worker.shadow.topic (list $topics.input $topics.output $topics.drift $topics.dlq) }}
{{- fail (printf "worker.shadow.topic (%s) must differ from the kafka.topics" .Values.worker.shadow.topic) }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (the other to null)" }}
{{- end }}
{{- end }}

{{/* KEDA's kafka scaler names for the SASL mechanisms of STREAM_SASL_MECHANISM. */}}
{{- define "product-categorizer.kedaSasl" -}}
{{- $m := dict "SCRAM-SHA-512" "scram_sha512" "SCRAM-SHA-256" "scram_sha256" "PLAIN" "plaintext" }}
{{- get $m .Values.kafka.saslMechanism }}
{{- end }}

{{- define "product-categorizer.usesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* The bundle store sync script (files/bundle-sync.sh), shared by the init container and the sidecar. */}}
{{- define "product-categorizer.bundleSyncScript" -}}
{{ .Files.Get "files/bundle-sync.sh" }}
{{- end }}

{{/*
A bundle sync container (init: "once", sidecar: "loop"). The aws CLI runs with the pod's IRSA role:
the EKS pod identity webhook injects AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE into every container.
*/}}
{{- define "product-categorizer.bundleSyncContainer" -}}
{{- $store := .root.Values.bundle.store -}}
- name: {{ .name }}
  image: {{ printf "%s:%s" $store.image.repository $store.image.tag | quote }}
  imagePullPolicy: {{ $store.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      {{- include "product-categorizer.bundleSyncScript" .root | nindent 6 }}
    - bundle-sync
    - {{ .mode }}
  env:
    - name: BUNDLE_S3_URI
      value: {{ $store.s3Uri | quote }}
    - name: BUNDLE_STORE
      value: {{ $store.path | quote }}
    - name: BUNDLE_SYNC_INTERVAL_SECONDS
      value: {{ $store.syncIntervalSeconds | int64 | quote }}
    {{- with $store.region }}
    - name: AWS_REGION
      value: {{ . | quote }}
    - name: AWS_DEFAULT_REGION
      value: {{ . | quote }}
    {{- end }}
    # Credentials come from IRSA only: never fall back to the node's instance role.
    - name: AWS_EC2_METADATA_DISABLED
      value: "true"
    # The root filesystem is read-only: the CLI's cache goes to the /tmp emptyDir.
    - name: HOME
      value: /tmp
  resources:
    {{- toYaml $store.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    privileged: false
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: bundle-store
      mountPath: {{ $store.path }}
    - name: bundle-sync-tmp
      mountPath: /tmp
{{- end }}
