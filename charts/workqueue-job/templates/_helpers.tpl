{{/* Chart name, or nameOverride, cut to 63 characters. */}}
{{- define "workqueue-job.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object name prefix: fullnameOverride, the release name if it holds the chart name, else
release-chart. Cut to 45 characters, not the usual 63, so that every component's name stays
distinct and valid: a StatefulSet name must leave room for its pods' revision-hash label (52),
and "<prefix>-broker-client" is a label key (63).
*/}}
{{- define "workqueue-job.fullname" -}}
{{- $prefix := "" }}
{{- if .Values.fullnameOverride }}
{{- $prefix = .Values.fullnameOverride }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- $prefix = .Release.Name }}
{{- else }}
{{- $prefix = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- end }}
{{- $prefix = $prefix | trunc 45 | trimSuffix "-" }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $prefix) }}
{{- fail (printf "the release name %q (or fullnameOverride) gives object names Kubernetes refuses for a Service: use lowercase letters, digits and '-', starting with a letter (e.g. job-%s)" .Release.Name (regexReplaceAll "[^a-z0-9-]" (lower .Release.Name) "-")) }}
{{- end }}
{{- $prefix }}
{{- end }}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "workqueue-job.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Per-component names: fullname plus the component (at most 52 characters). */}}
{{- define "workqueue-job.componentName" -}}
{{- printf "%s-%s" (include "workqueue-job.fullname" .context) .component }}
{{- end }}
{{- define "workqueue-job.broker.fullname" -}}
{{- include "workqueue-job.componentName" (dict "context" . "component" "broker") }}
{{- end }}
{{- define "workqueue-job.seeder.fullname" -}}
{{- include "workqueue-job.componentName" (dict "context" . "component" "seeder") }}
{{- end }}
{{- define "workqueue-job.tools.fullname" -}}
{{- include "workqueue-job.componentName" (dict "context" . "component" "tools") }}
{{- end }}
{{- define "workqueue-job.worker.fullname" -}}
{{- include "workqueue-job.componentName" (dict "context" . "component" "worker") }}
{{- end }}
{{/* Non-empty when the chart serves the queue's metrics: metrics on, in a queue mode. */}}
{{- define "workqueue-job.queueMetrics" -}}
{{- if and .Values.metrics.enabled (include "workqueue-job.usesBroker" .) }}true{{ end }}
{{- end }}

{{/*
Non-empty when the bundled RabbitMQ's own metrics are exposed: the official image serves them
(rabbitmq_prometheus, port 15692) whatever the chart does; with metrics on, the broker's Service
and NetworkPolicy open that port. The pod template is left alone, so turning metrics on does
not restart the broker.
*/}}
{{- define "workqueue-job.brokerMetrics" -}}
{{- if and (include "workqueue-job.queueMetrics" .) (include "workqueue-job.bundledBroker" .) (eq (include "workqueue-job.broker.type" .) "rabbitmq") }}true{{ end }}
{{- end }}
{{- define "workqueue-job.brokerMetricsPort" -}}15692{{- end }}

{{/* Non-empty when each worker serves its own metrics (queue modes only). */}}
{{- define "workqueue-job.workerMetrics" -}}
{{- if and (include "workqueue-job.queueMetrics" .) .Values.metrics.workers.enabled }}true{{ end }}
{{- end }}
{{- define "workqueue-job.metrics.fullname" -}}
{{- include "workqueue-job.componentName" (dict "context" . "component" "metrics") }}
{{- end }}

{{/* Selector labels, given (dict "context" . "component" NAME). They never change. */}}
{{- define "workqueue-job.selectorLabels" -}}
app.kubernetes.io/name: {{ include "workqueue-job.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels for pod templates, given (dict "context" . "component" NAME): none that change with the
chart's version, so an upgrade that changes nothing else does not replace the broker's pod (and,
on an emptyDir, its data) nor touch a Job's immutable template.
*/}}
{{- define "workqueue-job.podLabels" -}}
{{ include "workqueue-job.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "workqueue-job.name" .context }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end }}

{{/* Full label set, given (dict "context" . "component" NAME). */}}
{{- define "workqueue-job.labels" -}}
helm.sh/chart: {{ include "workqueue-job.chart" .context }}
{{ include "workqueue-job.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "workqueue-job.name" .context }}
{{- if .context.Chart.AppVersion }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end }}

{{/* The broker kind; fails unless redis or rabbitmq (the schema catches it first). */}}
{{- define "workqueue-job.broker.type" -}}
{{- $type := .Values.broker.type }}
{{- if not (has $type (list "redis" "rabbitmq")) }}
{{- fail (printf "broker.type must be redis or rabbitmq, not %q" $type) }}
{{- end }}
{{- $type }}
{{- end }}

{{/* Broker host: the external one, or the bundled Service's DNS name. */}}
{{- define "workqueue-job.broker.host" -}}
{{- if .Values.broker.external.enabled }}
{{- .Values.broker.external.host }}
{{- else }}
{{- printf "%s.%s.svc" (include "workqueue-job.broker.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Broker port: the external one if set, else the protocol's default. */}}
{{- define "workqueue-job.broker.port" -}}
{{- if and .Values.broker.external.enabled .Values.broker.external.port }}
{{- .Values.broker.external.port }}
{{- else if eq (include "workqueue-job.broker.type" .) "redis" }}6379
{{- else if and .Values.broker.external.enabled .Values.broker.external.tls }}5671
{{- else }}5672{{ end }}
{{- end }}

{{/*
RabbitMQ nodes each queue is replicated to: broker.rabbitmq.replicas for the bundled broker,
broker.external.replicas for an external one (1 for Redis). An odd number: a quorum of an even
count survives no more lost nodes than one of one node fewer.
*/}}
{{- define "workqueue-job.broker.replicas" -}}
{{- $ext := .Values.broker.external }}
{{- $n := int (ternary $ext.replicas .Values.broker.rabbitmq.replicas $ext.enabled) }}
{{- $key := ternary "broker.external.replicas" "broker.rabbitmq.replicas" $ext.enabled }}
{{- if and (gt $n 1) (eq (include "workqueue-job.broker.type" .) "redis") }}
{{- fail (printf "%s is %d, but only RabbitMQ replicates queues: set it to 1 with broker.type redis (Redis replication is asynchronous; README: High availability)" $key $n) }}
{{- end }}
{{- if eq (mod $n 2) 0 }}
{{- fail (printf "%s is %d; use an odd number such as 1, 3 or 5 (a quorum of %d nodes survives no more lost nodes than one of %d)" $key $n $n (sub $n 1)) }}
{{- end }}
{{- $n }}
{{- end }}

{{/* The bundled RabbitMQ's StatefulSet. A cluster's is named by its node count and a digest
of its volumes, a shape no update can change (podManagementPolicy, serviceName,
volumeClaimTemplates): a new count or storage makes a new, empty cluster, as a new claim gives
the single node an empty volume. Short enough for the pods' controller-revision-hash label. */}}
{{- define "workqueue-job.broker.statefulSetName" -}}
{{- $n := include "workqueue-job.broker.replicas" . | int }}
{{- if gt $n 1 }}
{{- $volumes := ternary (include "workqueue-job.broker.claimSpec" .) "emptyDir" .Values.broker.persistence.enabled }}
{{- printf "%s-%d-%s" (include "workqueue-job.broker.fullname" . | trunc 40 | trimSuffix "-") $n ($volumes | sha256sum | trunc 8) }}
{{- else }}
{{- include "workqueue-job.broker.fullname" . }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each node of the bundled cluster its DNS name. */}}
{{- define "workqueue-job.broker.peersName" -}}
{{- include "workqueue-job.broker.fullname" . }}-peers
{{- end }}

{{/* The hosts the workers connect to: one per node of a cluster, else the one broker. */}}
{{- define "workqueue-job.broker.hosts" -}}
{{- $ext := .Values.broker.external }}
{{- $hosts := list }}
{{- if and $ext.enabled $ext.hosts }}
{{- $hosts = $ext.hosts }}
{{- else if and (not $ext.enabled) (gt (include "workqueue-job.broker.replicas" . | int) 1) }}
{{- $sts := include "workqueue-job.broker.statefulSetName" . }}
{{- $peers := include "workqueue-job.broker.peersName" . }}
{{- range $i := until (include "workqueue-job.broker.replicas" . | int) }}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc" $sts $i $peers $.Release.Namespace) }}
{{- end }}
{{- else }}
{{- $hosts = list (include "workqueue-job.broker.host" .) }}
{{- end }}
{{- toJson $hosts }}
{{- end }}

{{/* Broker URL without the password (that comes from the Secret): one per host, separated by
commas, for a RabbitMQ cluster. */}}
{{- define "workqueue-job.broker.url" -}}
{{- $urls := list }}
{{- range $host := include "workqueue-job.broker.hosts" . | fromJsonArray }}
{{- $urls = append $urls (include "workqueue-job.broker.hostUrl" (dict "context" $ "host" $host)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{- define "workqueue-job.broker.hostUrl" -}}
{{- $host := .host }}
{{- with .context }}
{{- $port := include "workqueue-job.broker.port" . }}
{{- $ext := .Values.broker.external }}
{{- $tls := and $ext.enabled $ext.tls }}
{{- if eq (include "workqueue-job.broker.type" .) "redis" }}
{{- $user := ternary (printf "%s@" $ext.redisUser) "" (and $ext.enabled (ne $ext.redisUser "")) }}
{{- printf "%s://%s%s:%s/%d" (ternary "rediss" "redis" $tls) $user $host $port (int $ext.database) }}
{{- else }}
{{- $user := ternary $ext.user .Values.broker.rabbitmq.user $ext.enabled }}
{{- $vhost := ternary $ext.vhost "/" $ext.enabled }}
{{- printf "%s://%s@%s:%s/%s" (ternary "amqps" "amqp" $tls) $user $host $port (urlquery $vhost) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret holding the broker password: the user's, or the generated one. */}}
{{- define "workqueue-job.broker.secretName" -}}
{{- default (include "workqueue-job.broker.fullname" .) .Values.broker.auth.existingSecret }}
{{- end }}

{{/* Runtime image; the tag defaults to the chart's appVersion. */}}
{{- define "workqueue-job.image" -}}
{{- include "workqueue-job.imageRef" (dict "where" "image" "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/*
"repository:tag", quoted, once both are what a kubelet can pull (the distribution reference
grammar): a bad one would leave its pods in InvalidImageName for good, which no
podFailurePolicy rule ends, so it is refused at render with one line.
*/}}
{{- define "workqueue-job.imageRef" -}}
{{- $host := "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]+)?/" }}
{{- $path := "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*" }}
{{- if not (regexMatch (printf "^(%s)?%s(/%s)*$" $host $path $path) (toString .repository)) }}
{{- fail (printf "%s.repository %q is not an image name a cluster can pull: lowercase letters, digits, '.', '_', '-' and '/', after an optional registry host[:port]/ (e.g. registry.example/team/render)" .where (toString .repository)) }}
{{- end }}
{{- if not (regexMatch "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$" (toString .tag)) }}
{{- fail (printf "%s.tag %q is not an image tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-' (e.g. 1.2.0)" .where (toString .tag)) }}
{{- end }}
{{- printf "%s:%s" .repository (toString .tag) | quote }}
{{- end }}

{{/* Number of tasks: the inline list, or tasksFrom.count. */}}
{{- define "workqueue-job.taskCount" -}}
{{- if .Values.tasksFrom.configMaps }}{{ .Values.tasksFrom.count }}{{ else }}{{ len .Values.tasks }}{{ end }}
{{- end }}

{{/*
The release's queue family: one per release and namespace, so two releases of one name in two
namespaces never share a queue on a shared broker.
*/}}
{{- define "workqueue-job.queueFamily" -}}
{{- printf "%s.%s" .Release.Namespace (include "workqueue-job.fullname" .) }}
{{- end }}

{{/*
The run's queue, shared by the seeder, the workers and the helm test: one per run, so a changed
task list never mixes with the old one's state. The seeder deletes the family's previous queue.
*/}}
{{- define "workqueue-job.queue" -}}
{{- printf "%s.%s" (include "workqueue-job.queueFamily" .) (include "workqueue-job.runId" .) }}
{{- end }}

{{/*
The run's identity: a digest of the task list as the values give it (the inline tasks, or the
tasksFrom ConfigMaps with their count and checksum) and of `rerun`. The seeder records it;
workers and the helm test refuse a queue that holds another run, instead of reporting that
run's results.
*/}}
{{- define "workqueue-job.runId" -}}
{{- $source := dict "tasks" .Values.tasks }}
{{- if .Values.tasksFrom.configMaps }}
{{- $source = dict "configMaps" .Values.tasksFrom.configMaps "count" .Values.tasksFrom.count "checksum" .Values.tasksFrom.checksum }}
{{- end }}
{{- if .Values.rerun }}
{{- $_ := set $source "rerun" .Values.rerun }}
{{- end }}
{{- toJson $source | sha256sum | trunc 16 }}
{{- end }}

{{/*
A Job's name, given (dict "context" . "component" NAME "fixedSpec" TEXT): the component's name
and a digest of the Job's fields that the API server never lets change (its pod template,
completions, podFailurePolicy), read as data so that comments do not count. A change to any of
them makes a new Job, which Helm creates while it deletes the old one, instead of an upgrade
failing with "field is immutable".
*/}}
{{- define "workqueue-job.jobName" -}}
{{- printf "%s-%s" (include "workqueue-job.componentName" (dict "context" .context "component" .component)) (.fixedSpec | fromYaml | toJson | sha256sum | trunc 8) }}
{{- end }}
{{- define "workqueue-job.worker.jobName" -}}
{{- $name := include "workqueue-job.jobName" (dict "context" . "component" "worker" "fixedSpec" (include "workqueue-job.worker.fixedSpec" .)) }}
{{- if ne .Values.mode "coarse" }}
{{- /* An Indexed Job's pods are named "<job>-<index>" as hostnames, DNS labels of at most 63
characters (pkg/apis/batch/validation ValidateJob): the name gives up the end of "-worker",
then of the prefix, for the digits of the last index. */}}
{{- $completions := ternary .Values.worker.maxPods (include "workqueue-job.taskCount" .) (eq .Values.mode "fine") }}
{{- $room := sub 63 (add 1 (len (toString (sub (int $completions) 1)))) }}
{{- $digest := regexFind "[0-9a-f]{8}$" $name }}
{{- $name = printf "%s-%s" (trimPrefix "-" (trimSuffix "-" (trunc (int (sub $room 9)) (trimSuffix (printf "-%s" $digest) $name)))) $digest }}
{{- end }}
{{- $name }}
{{- end }}
{{- define "workqueue-job.seeder.jobName" -}}
{{- include "workqueue-job.jobName" (dict "context" . "component" "seeder" "fixedSpec" (include "workqueue-job.seeder.fixedSpec" .)) }}
{{- end }}

{{/*
Bytes in a memory quantity given as a whole number with an optional k, M, G, T, Ki, Mi, Gi or
Ti suffix (values.schema.json allows no other form for the brokers' memory limits).
*/}}
{{- define "workqueue-job.bytes" -}}
{{- $quantity := toString . }}
{{- $number := regexFind "^[0-9]+" $quantity }}
{{- $unit := trimPrefix $number $quantity }}
{{- $scale := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $number) (not (hasKey $scale $unit)) }}
{{- fail (printf "cannot read the memory quantity %q: use a whole number with an optional k, M, G, T, Ki, Mi, Gi or Ti suffix" $quantity) }}
{{- end }}
{{- mul (int64 $number) (index $scale $unit) }}
{{- end }}

{{/* Pod-level security: the Pod Security "restricted" profile. */}}
{{- define "workqueue-job.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: restricted, read-only root filesystem. */}}
{{- define "workqueue-job.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Environment every runtime container needs to reach the queue. */}}
{{- define "workqueue-job.brokerEnv" -}}
- name: WORKQUEUE_BROKER_URL
  value: {{ include "workqueue-job.broker.url" . | quote }}
- name: WORKQUEUE_BROKER_PASSWORD_FILE
  value: {{ include "workqueue-job.brokerAuthDir" . }}/password
{{- if gt (include "workqueue-job.broker.replicas" . | int) 1 }}
- name: WORKQUEUE_BROKER_REPLICAS
  value: {{ include "workqueue-job.broker.replicas" . | quote }}
{{- end }}
- name: WORKQUEUE_QUEUE
  value: {{ include "workqueue-job.queue" . | quote }}
- name: WORKQUEUE_RUN_ID
  value: {{ include "workqueue-job.runId" . | quote }}
{{- if .Values.retryDead }}
- name: WORKQUEUE_RETRY_DEAD_ROUND
  value: {{ .Values.retryDead | quote }}
{{- end }}
{{- end }}

{{/* Where pods find the broker password: a file, so it stays out of every child's environment. */}}
{{- define "workqueue-job.brokerAuthDir" -}}/var/run/secrets/workqueue{{- end }}

{{/* The broker Secret as a volume holding one file, "password" (readable through fsGroup). */}}
{{- define "workqueue-job.brokerAuthVolume" -}}
- name: broker-auth
  secret:
    secretName: {{ include "workqueue-job.broker.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.broker.auth.passwordKey }}
        path: password
{{- end }}

{{/* Mount for brokerAuthVolume. */}}
{{- define "workqueue-job.brokerAuthMount" -}}
- name: broker-auth
  mountPath: {{ include "workqueue-job.brokerAuthDir" . }}
  readOnly: true
{{- end }}

{{/* UID of the runtime image's user (see worker-images/Dockerfile). */}}
{{- define "workqueue-job.runtimeUid" -}}10001{{- end }}

{{/*
The broker's data claim: a claim of its own rather than a StatefulSet volumeClaimTemplate, which
the API server never lets change. Its name carries a digest of its spec, which is just as
immutable: a new size or StorageClass makes a new claim, and the broker starts on it empty.
*/}}
{{- define "workqueue-job.broker.claimSpec" -}}
accessModes: [ReadWriteOnce]
{{- with .Values.broker.persistence.storageClass }}
storageClassName: {{ . }}
{{- end }}
resources:
  requests:
    storage: {{ .Values.broker.persistence.size }}
{{- end }}
{{- define "workqueue-job.broker.claimName" -}}
{{- printf "%s-data-%s" (include "workqueue-job.fullname" .) (include "workqueue-job.broker.claimSpec" . | fromYaml | toJson | sha256sum | trunc 8) }}
{{- end }}

{{/* Labels that let a pod through the broker's NetworkPolicy. */}}
{{- define "workqueue-job.brokerClientLabel" -}}
{{ include "workqueue-job.fullname" . }}-broker-client: "true"
{{- end }}

{{/*
What every pod of the release gets, given (dict "context" . "own" COMPONENT_VALUES): image pull
secrets, the priority class, and the scheduling values, where the component's own
nodeSelector, tolerations and affinity win over the release-wide ones. Also
shareProcessNamespace: the pause container is then PID 1, so orphaned grandchildren of a task
are reaped and our processes get the kernel's usual signal handling.
*/}}
{{- define "workqueue-job.podCommon" -}}
{{- $v := .context.Values -}}
shareProcessNamespace: true
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (default $v.nodeSelector .own.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $v.tolerations .own.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $v.affinity .own.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The worker pods' ServiceAccount: the chart's, or the one the user names. */}}
{{- define "workqueue-job.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "workqueue-job.worker.fullname" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- required "worker.serviceAccount.name is required when worker.serviceAccount.create is false" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" in the queue modes (fine, coarse), "" in indexed mode, which has no broker. */}}
{{- define "workqueue-job.usesBroker" -}}
{{- if ne .Values.mode "indexed" }}true{{ end }}
{{- end }}

{{/* "true" when the chart deploys the broker itself: a queue mode without broker.external. */}}
{{- define "workqueue-job.bundledBroker" -}}
{{- if and (include "workqueue-job.usesBroker" .) (not .Values.broker.external.enabled) }}true{{ end }}
{{- end }}

{{/* The ConfigMap the chart writes the inline `tasks` to. */}}
{{- define "workqueue-job.tasksConfigMapName" -}}
{{- include "workqueue-job.fullname" . }}-tasks
{{- end }}

{{/*
The task list as a volume of `*.jsonl` chunks in order, for the seeder, or for indexed mode's
workers: the tasksFrom ConfigMaps, or the chart's own ConfigMap of the inline tasks.
*/}}
{{- define "workqueue-job.tasksVolume" -}}
- name: tasks
  projected:
    sources:
      {{- if .Values.tasksFrom.configMaps }}
      {{- range $index, $name := .Values.tasksFrom.configMaps }}
      - configMap:
          name: {{ $name }}
          # Optional, so a ConfigMap that was never applied leaves a chunk missing, which the
          # seeder or an indexed worker reports (a count mismatch, exit 4), instead of the pod
          # waiting forever in ContainerCreating for a volume it cannot mount.
          optional: true
          items:
            - {key: tasks.jsonl, path: {{ printf "%05d.jsonl" $index }}}
      {{- end }}
      {{- else }}
      - configMap:
          name: {{ include "workqueue-job.tasksConfigMapName" . }}
          items:
            - {key: tasks.jsonl, path: 00000.jsonl}
      {{- end }}
{{- end }}
