{{/* Chart name, truncated to leave room for suffixes. */}}
{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; also the Service's name and so Prometheus's `job` label. */}}
{{- define "gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The migrate Job's pod: not the Deployment's selector labels, so the Service does not route to it. */}}
{{- define "gateway.migrateSelectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}-migrate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: migrate
{{- end -}}

{{/* NetworkPolicy egress rules to the cluster DNS and, with PostgreSQL, the database. */}}
{{- define "gateway.egressDnsAndDatabase" -}}
{{- $np := .Values.networkPolicy -}}
{{- $dns := $np.egress.dns -}}
# DNS
- {{- if or $dns.namespace $dns.podLabels }}
  to:
    - {{- if $dns.namespace }}
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $dns.namespace | quote }}
      {{- end }}
      {{- with $dns.podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
  {{- end }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if include "gateway.postgresql" . }}
{{- $db := $np.egress.database }}
# PostgreSQL
- to:
    {{- if or $db.namespace $db.podLabels }}
    - {{- if $db.namespace }}
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $db.namespace | quote }}
      {{- end }}
      {{- with $db.podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
    {{- end }}
    {{- range $db.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ $db.port }}
      protocol: TCP
{{- end }}
{{- end -}}

{{- define "gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: profile-gateway
{{- end -}}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when image.digest is set (the tag is then ignored). */}}
{{- define "gateway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the GATEWAY_* tokens come from: an existing one, or the chart's. */}}
{{- define "gateway.secretName" -}}
{{- default (include "gateway.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "gateway.postgresql" -}}
{{- if eq .Values.database.type "postgresql" -}}true{{- end -}}
{{- end -}}

{{/* More than one pod can run: PodDisruptionBudget and spreading make sense. */}}
{{- define "gateway.multiReplica" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* Does the scrape send GATEWAY_METRICS_TOKEN? */}}
{{- define "gateway.metricsAuth" -}}
{{- $sm := .Values.metrics.serviceMonitor -}}
{{- if or .Values.metrics.requireToken $sm.bearerTokenFromSecret (and (not .Values.secrets.existingSecret) (index (default (dict) .Values.secrets.values) "GATEWAY_METRICS_TOKEN")) -}}true{{- end -}}
{{- end -}}

{{/* The chart-made Secret's GATEWAY_METRICS_TOKEN: the one given; else, with
metrics.requireToken, the one this release's Secret already holds (so an upgrade
keeps it), or a new random one. */}}
{{- define "gateway.metricsToken" -}}
{{- $token := index (default (dict) .Values.secrets.values) "GATEWAY_METRICS_TOKEN" | default "" -}}
{{- if and (not $token) .Values.metrics.requireToken -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "gateway.fullname" .) -}}
{{- if and $existing $existing.data (index $existing.data "GATEWAY_METRICS_TOKEN") -}}
{{- $token = index $existing.data "GATEWAY_METRICS_TOKEN" | b64dec -}}
{{- else -}}
{{- $token = randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- $token -}}
{{- end -}}

{{/* Where the credentials are mounted as files (secrets.asFiles). */}}
{{- define "gateway.secretsDir" -}}/var/run/secrets/gateway{{- end -}}

{{/* The tokens Secret's keys mounted as files, comma-separated; empty when the
Secret goes in as environment variables instead: secrets.asFiles off, or an
existing Secret whose keys secrets.existingSecretKeys does not name (the chart
cannot see them). The keys the gateway must have are always among them: a key
missing from the Secret keeps the pod from starting. */}}
{{- define "gateway.secretFileKeys" -}}
{{- $s := .Values.secrets -}}
{{- $keys := list -}}
{{- if and $s.asFiles (not $s.existingSecret) -}}
{{- $keys = append (keys (default (dict) $s.values)) "GATEWAY_METRICS_TOKEN" -}}
{{- else if and $s.asFiles $s.existingSecretKeys -}}
{{- $keys = $s.existingSecretKeys -}}
{{- if not .Values.allowPlaintext -}}{{- $keys = append $keys "GATEWAY_ENCRYPTION_KEYS" -}}{{- end -}}
{{- if .Values.metrics.requireToken -}}{{- $keys = append $keys "GATEWAY_METRICS_TOKEN" -}}{{- end -}}
{{- end -}}
{{- $keys | uniq | sortAlpha | join "," -}}
{{- end -}}

{{/* A GATEWAY_<KEY>_FILE entry for each key of the tokens Secret mounted as a file. */}}
{{- define "gateway.secretFileEnv" -}}
{{- $dir := include "gateway.secretsDir" . -}}
{{- $keys := include "gateway.secretFileKeys" . -}}
{{- if $keys }}
{{- range splitList "," $keys }}
- name: {{ . }}_FILE
  value: {{ printf "%s/%s" $dir . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The projected volume of credentials (secrets.asFiles); `.database` only: the
migrate Job's, which runs before the chart's Secret exists. */}}
{{- define "gateway.secretVolume" -}}
{{- $root := .root -}}
{{- $keys := ternary "" (include "gateway.secretFileKeys" $root) (default false .databaseOnly) -}}
{{- $pg := include "gateway.postgresql" $root -}}
{{- if and $root.Values.secrets.asFiles (or $keys $pg) }}
- name: secrets
  projected:
    # 0440 (readable by podSecurityContext.fsGroup, the pod's group) or,
    # without an fsGroup, 0444: the files would be root's otherwise.
    defaultMode: {{ ternary 288 292 (not (empty ($root.Values.podSecurityContext).fsGroup)) }}
    sources:
      {{- if $pg }}
      - secret:
          name: {{ $root.Values.database.postgresql.existingSecret }}
          items:
            - key: {{ $root.Values.database.postgresql.secretKey }}
              path: GATEWAY_DATABASE_URL
      {{- end }}
      {{- if $keys }}
      - secret:
          name: {{ include "gateway.secretName" $root }}
          items:
            {{- range splitList "," $keys }}
            - key: {{ . }}
              path: {{ . }}
            {{- end }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* With secrets.existingSecret the chart cannot see what the Secret holds:
these entries (required keys) keep the pod from starting without them. */}}
{{- define "gateway.requiredSecretEnv" -}}
{{- if and .Values.secrets.existingSecret (not (include "gateway.secretFileKeys" .)) }}
{{- if not .Values.allowPlaintext }}
- name: GATEWAY_ENCRYPTION_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: GATEWAY_ENCRYPTION_KEYS
{{- end }}
{{- if .Values.metrics.requireToken }}
- name: GATEWAY_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: GATEWAY_METRICS_TOKEN
{{- end }}
{{- end }}
{{- end -}}

{{/* GATEWAY_DATABASE_URL: the SQLite file on the volume, or PostgreSQL's URL from
its Secret, as a file (secrets.asFiles, in the volume gateway.secretVolume makes)
or as a variable. */}}
{{- define "gateway.databaseEnv" -}}
{{- if and (include "gateway.postgresql" .) .Values.secrets.asFiles }}
{{- $_ := required "database.postgresql.existingSecret is required with database.type=postgresql" .Values.database.postgresql.existingSecret }}
# The URL holds a password: read from the mounted Secret, not put in the environment.
- name: GATEWAY_DATABASE_URL_FILE
  value: {{ printf "%s/GATEWAY_DATABASE_URL" (include "gateway.secretsDir" .) }}
{{- else if include "gateway.postgresql" . }}
- name: GATEWAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.postgresql.existingSecret is required with database.type=postgresql" .Values.database.postgresql.existingSecret }}
      key: {{ .Values.database.postgresql.secretKey }}
{{- else }}
- name: GATEWAY_DATABASE_URL
  value: {{ printf "sqlite:///%s" .Values.database.sqlite.path | quote }}
{{- end }}
{{- end -}}

{{/* The shortest termination that lets the gateway drain: the preStop sleep,
GATEWAY_SHUTDOWN_DELAY, GATEWAY_SHUTDOWN_GRACE, and 10 s for the requests in
flight (at most 5 s) and the exit. */}}
{{- define "gateway.terminationFloor" -}}
{{- $t := .Values.termination -}}
{{- add $t.preStopSleepSeconds $t.shutdownDelaySeconds $t.dispatcherGraceSeconds 10 -}}
{{- end -}}

{{/* Refuse combinations the schema cannot express. */}}
{{- define "gateway.validate" -}}
{{- $t := .Values.termination -}}
{{- $floor := include "gateway.terminationFloor" . -}}
{{- if and (not (kindIs "invalid" $t.terminationGracePeriodSeconds)) (lt (int $t.terminationGracePeriodSeconds) (int $floor)) -}}
{{- fail (printf "termination.terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds + shutdownDelaySeconds + dispatcherGraceSeconds + 10 = %v, so in-flight sends can drain" $t.terminationGracePeriodSeconds $floor) -}}
{{- end -}}
{{- if and (not (include "gateway.postgresql" .)) (include "gateway.multiReplica" .) -}}
{{- fail "SQLite runs one replica: set database.type=postgresql for replicaCount > 1 or autoscaling" -}}
{{- end -}}
{{- if and (not .Values.allowPlaintext) (not .Values.secrets.existingSecret) (not (index (default (dict) .Values.secrets.values) "GATEWAY_ENCRYPTION_KEYS")) -}}
{{- fail "secrets.values.GATEWAY_ENCRYPTION_KEYS is empty: profiles would be stored unencrypted. Set it (`gateway generate-key` prints one), use secrets.existingSecret, or set allowPlaintext: true for a trial with made-up data" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
